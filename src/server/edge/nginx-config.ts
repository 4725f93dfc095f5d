/**
 * The nginx edge's configuration, generated from lj serve's tables (nginx.ts applies it): one
 * upstream per app with its healthy instances (each bounded to `perWorker` requests in flight
 * per worker) and lj serve's overflow listener as the backup beyond that (overflow.ts), and a
 * keep-alive pool, server blocks by Host (the
 * app's APP.<domain> and its custom domains), a TLS server block per certificate (SNI), the
 * HTTP->HTTPS redirect once a certificate exists, the ACME challenge path and every Host that is
 * not an app's proxied to lj serve's private listener, the router's pages for 404/413/502/503,
 * the forwarding headers with forwarding.ts's semantics, and the access log in the router's
 * line format. A pure function of its input: tested by `nginx -t` and by real requests.
 */
import { NAME_PATTERN } from "../../store/names.ts";
import { CHALLENGE } from "./private.ts";
import { PAGES, pageHtml, type Target } from "./router.ts";

export interface NginxTables {
  /** Every app's web targets (no healthy instance: []). */
  routes: Record<string, Target[]>;
  /** Custom domains: name -> app. */
  domains: Record<string, string>;
  /**
   * Names with a valid certificate, where its files are, and its end of validity (a renewed
   * certificate changes the file: nginx reads the new one when it reloads).
   */
  certs: { name: string; cert: string; key: string; notAfter: number }[];
}

export interface NginxSettings {
  prefix: string;
  hostname: string;
  port: number;
  /** The HTTPS port (listened on once a certificate exists). */
  httpsPort?: number;
  /** Loopback port serving the configuration's generation (the reload protocol). */
  generationPort: number;
  /** lj serve's private listener. */
  otherPort: number;
  domain: string;
  trustedProxies: readonly string[];
  maxBodyBytes: number;
  /** `worker_processes` ("auto" or a count). */
  workers: string;
  /** The workers' nice value (`worker_priority`); 0 leaves them at lj serve's. */
  priority: number;
  /** Idle keep-alive connections kept per app and worker process. */
  keepalive: number;
  /**
   * Requests a worker process has in flight toward one instance (`max_conns`, counted per worker
   * as nginx does without a shared zone); the rest go to lj serve's overflow listener.
   */
  perWorker: number;
  /** lj serve's overflow listener: the Unix socket every app's upstream lists as its backup. */
  overflow: string;
  /** The user and group nginx's workers run as (only when lj serve runs as root). */
  user?: { name: string; group: string };
  accessLog: string;
  /** Unbuffered copy of the lines lj serve writes to the app's log (5xx, 413). */
  reportLog: string;
  /** How long access-log lines wait in nginx's buffer (ms). */
  flushMs: number;
  /** Open files a worker may have (the hard limit lj serve runs under). */
  openFiles: number;
}

/** An nginx string: single-quoted, nothing in it read as a variable unless `vars`. */
function str(s: string, vars = false): string {
  const text = vars ? s : s.replace(/\$/g, "&#36;");
  return `'${text.replace(/[\\']/g, (c) => `\\${c}`)}'`;
}

const listenAddr = (host: string, port: number) => `${host.includes(":") ? `[${host}]` : host}:${port}`;

/**
 * A server block's listen lines. "::" means every address, IPv4 too (as Bun's listeners take
 * it): nginx gets a socket of each family, so IPv4 peers keep their plain addresses.
 */
function listenLines(host: string, port: number, extra = ""): string {
  const hosts = host === "::" ? ["0.0.0.0", "::"] : [host];
  return hosts.map((h) => `    listen ${listenAddr(h, port)}${extra};\n`).join("");
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Upstream names: apps are DNS labels, which nginx accepts as they are. */
const upstreamOf = (app: string) => `lj_app_${app}`;

/** A named location answering one of the router's pages. */
function pageLocation(name: string, status: number, [title, text]: readonly [string, string]): string {
  return `    location @${name} {
      default_type "text/html; charset=utf-8";
      ${status === 503 ? "add_header Retry-After 2 always;\n      " : ""}return ${status} ${str(pageHtml(title, text))};
    }
`;
}

/** What every server of lj serve's (not an app's) does: pass the request on as it came. */
function toLjServe(): string {
  return `      proxy_pass http://lj_serve;
      proxy_set_header Host $http_host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $lj_connection;
      # Deploy logs follow for as long as a deploy runs; git pushes stream their bodies.
      proxy_read_timeout 1d;
      proxy_send_timeout 1d;
      proxy_buffering off;
      client_max_body_size 0;
`;
}

/**
 * lj serve's own server (the API, git, `lj run` sessions). Uploads and git pushes stream their
 * bodies through, and lj serve may answer one before it has read it all (an upload over the
 * cap): nginx then closes that client connection once the answer is sent, so the answer says
 * so (keepalive_timeout 0) and the client opens a new connection for its next request instead
 * of sending it down one about to close.
 */
function ljServeLocations(): string {
  return `    location / {
${toLjServe()}    }
    location ~ ^/(api/v1/apps/[^/]+/source|git/) {
      keepalive_timeout 0;
${toLjServe()}    }
`;
}

function challengeLocation(): string {
  return `    location ^~ ${CHALLENGE} {
      access_log off;
${toLjServe()}    }
`;
}

/** The part of an app's server block that serves it (HTTP without a certificate, and HTTPS). */
function appBody(s: NginxSettings, app: string, targets: Target[]): string {
  const serve =
    targets.length === 0
      ? `    location / {
      return 503;
    }
`
      : `    location / {
      proxy_pass http://${upstreamOf(app)};
    }
`;
  return `    set $lj_app ${app};
    access_log ${s.accessLog} lj buffer=4k flush=${s.flushMs}ms;
    access_log ${s.reportLog} lj_report if=$lj_report;
    error_page 502 504 @lj502;
    error_page 503 @lj503;
    error_page 413 @lj413;
${pageLocation("lj502", 502, PAGES.badGateway(app, ""))}${pageLocation("lj503", 503, PAGES.unavailable(app))}${pageLocation("lj413", 413, PAGES.tooLarge(tooLargeWhy(s.maxBodyBytes)))}${challengeLocation()}${serve}`;
}

export const tooLargeWhy = (max: number) =>
  `the request body exceeds this server's limit of ${max} bytes (lj serve --max-body)`;

/** RFC 7230's token characters: a `Forwarded` host made of them goes unquoted. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * The forwarding headers (forwarding.ts): the peer's own, or a trusted proxy's chain kept. Each
 * header's value is a variable set here; without trusted proxies (the usual case) they are the
 * peer's alone, with no lookup per request beyond the two RFC 7239 quotings. The host's quoting
 * is written out for every name this edge serves (`hosts`, with and without the listeners'
 * ports), so that a request for one of them is an exact lookup; only other hosts meet the
 * regular expressions.
 */
function forwarding(s: NginxSettings, hosts: string[]): { maps: string; headers: string } {
  // RFC 7239: an IPv6 node in brackets and quoted; a host that is not a token quoted.
  const v6 = s.hostname.includes(":") || !/^[0-9.]+$/.test(s.hostname);
  const nodeMap = v6
    ? `  map $realip_remote_addr $lj_fwd_node {
    "~:" "\\"[$realip_remote_addr]\\"";
    default $realip_remote_addr;
  }
`
    : "";
  const node = v6 ? "$lj_fwd_node" : "$realip_remote_addr";
  const ports = [s.port, s.httpsPort].filter((p): p is number => p !== undefined && p !== 0);
  const known = [...new Set(hosts.flatMap((h) => [h, ...ports.map((p) => `${h}:${p}`)]))]
    .map((h) => `    ${str(h)} ${str(TOKEN.test(h) ? ";host=$http_host" : ';host="$http_host"', true)};\n`)
    .join("");
  const hostMap = `  map $http_host $lj_fwd_host {
${known}    "~^[!#$%&'*+.^_\`|~0-9A-Za-z-]+$" ";host=$http_host";
    "~[\\"\\\\\\\\]" "";
    "" "";
    default ";host=\\"$http_host\\"";
  }
`;
  const own = `for=${node};proto=$scheme$lj_fwd_host`;
  const headers = (v: { xff: string; proto: string; host: string; port: string; forwarded: string }) =>
    `  proxy_set_header X-Forwarded-For ${v.xff};
  proxy_set_header X-Forwarded-Proto ${v.proto};
  proxy_set_header X-Forwarded-Host ${v.host};
  proxy_set_header X-Forwarded-Port ${v.port};
  proxy_set_header X-Real-IP $remote_addr;
  proxy_set_header Forwarded ${v.forwarded};
`;
  if (s.trustedProxies.length === 0)
    return {
      maps: nodeMap + hostMap,
      headers: headers({
        xff: "$remote_addr",
        proto: "$scheme",
        host: "$http_host",
        port: '""',
        forwarded: `"${own}"`,
      }),
    };
  const trusted = s.trustedProxies.map((c) => `    ${c} 1;\n`).join("");
  // The realip module walks X-Forwarded-For from the right to the first address that is not a
  // trusted proxy: X-Real-IP ($remote_addr). $realip_remote_addr stays the TCP peer.
  const kept = (
    name: string,
    header: string,
    fallback: string,
    value = "$v",
  ) => `  map "$lj_trusted|${header}" ${name} {
    "~^1\\|(?<v>.+)$" "${value}";
    default ${fallback};
  }
`;
  const maps = `  geo $realip_remote_addr $lj_trusted {
    default 0;
${trusted}  }
${s.trustedProxies.map((c) => `  set_real_ip_from ${c};\n`).join("")}  real_ip_header X-Forwarded-For;
  real_ip_recursive on;
${kept("$lj_xff", "$http_x_forwarded_for", "$realip_remote_addr", "$v, $realip_remote_addr")}${kept("$lj_proto", "$http_x_forwarded_proto", "$scheme")}${kept("$lj_xhost", "$http_x_forwarded_host", "$http_host")}${kept("$lj_xport", "$http_x_forwarded_port", '""')}${nodeMap}${hostMap}${kept("$lj_forwarded", "$http_forwarded", `"${own}"`, `$v, ${own}`)}`;
  return {
    maps,
    headers: headers({
      xff: "$lj_xff",
      proto: "$lj_proto",
      host: "$lj_xhost",
      port: "$lj_xport",
      forwarded: "$lj_forwarded",
    }),
  };
}

/** "0.000" -> 0 ... "0.999" -> 999: the lookup table of $lj_ms. */
const SUB_SECOND = Array.from(
  { length: 1000 },
  (_, ms) => `    0.${String(ms).padStart(3, "0")} ${ms};\n`,
).join("");

export function renderNginxConfig(s: NginxSettings, t: NginxTables, generation: number): string {
  const listen = (extra = "") => listenLines(s.hostname, s.port, extra);
  const listenTls = (extra = "") => listenLines(s.hostname, s.httpsPort ?? 0, ` ssl${extra}`);
  const suffix = `.${s.domain.toLowerCase()}`;
  const apps = Object.keys(t.routes).sort();
  const byApp = new Map<string, string[]>();
  for (const [d, app] of Object.entries(t.domains).sort()) {
    if (t.routes[app] === undefined) continue;
    byApp.set(app, [...(byApp.get(app) ?? []), d]);
  }
  const withCert = new Set(t.certs.map((c) => c.name));
  const https = s.httpsPort !== undefined && t.certs.length > 0;
  const instances = [
    ...new Set(apps.flatMap((a) => t.routes[a]!.map((x) => listenAddr(x.address, x.port)))),
  ].sort();
  const hashSize = Math.max(4096, 8 * (apps.length + Object.keys(t.domains).length + instances.length));
  const fwd = forwarding(s, [...apps.map((a) => `${a}${suffix}`), ...Object.keys(t.domains)]);
  // An idle connection toward an app is closed after 1 s, well before apps close theirs (node
  // after 5 s, gunicorn after 2): a request sent on one the app is closing gets a reset, and
  // nginx, which streams request bodies, does not send a request again once it went out, so
  // that would be a 502.
  // Each worker holds at most perWorker requests toward an instance; when every instance of the
  // app is at its bound, round robin falls to the backup server: lj serve's overflow listener,
  // whose router queues them per instance (router.ts's gate).
  const upstreams = apps
    .filter((a) => t.routes[a]!.length > 0)
    .map(
      (a) => `  upstream ${upstreamOf(a)} {
${t.routes[a]!.map((x) => `    server ${listenAddr(x.address, x.port)} max_fails=0 max_conns=${s.perWorker};\n`).join("")}    server unix:${s.overflow} max_fails=0 backup;
    keepalive ${s.keepalive};
    keepalive_timeout 1s;
    keepalive_requests 100000;
  }
`,
    )
    .join("");
  const appServers = apps
    .map((a) => {
      const plain = (byApp.get(a) ?? []).filter((d) => !(https && withCert.has(d)));
      return `  server {
${listen()}    server_name ${[`${a}${suffix}`, ...plain].join(" ")};
${appBody(s, a, t.routes[a]!)}  }
`;
    })
    .join("");
  const httpsPort = s.httpsPort ?? 0;
  const redirects = https
    ? t.certs
        .filter((c) => t.routes[t.domains[c.name] ?? ""] !== undefined)
        .map(
          (c) => `  server {
${listen()}    server_name ${c.name};
    access_log off;
${challengeLocation()}    location / {
      return 308 https://$host${httpsPort === 443 ? "" : `:${httpsPort}`}$request_uri;
    }
  }
  server {
${listenTls()}    server_name ${c.name};
    # valid until ${new Date(c.notAfter).toISOString()}
    ssl_certificate ${c.cert};
    ssl_certificate_key ${c.key};
${appBody(s, t.domains[c.name]!, t.routes[t.domains[c.name]!]!)}  }
`,
        )
        .join("")
    : "";
  return `# Written by lj serve from its tables; every change replaces this file (do not edit).
${s.user ? `user ${s.user.name} ${s.user.group};\n` : ""}worker_processes ${s.workers};
${s.priority ? `worker_priority ${s.priority};\n` : ""}worker_rlimit_nofile ${s.openFiles};
pid ${s.prefix}/nginx.pid;
error_log stderr crit;
events {
  # A proxied request holds two: the client's connection and the one toward the app.
  worker_connections ${Math.min(16384, Math.floor(s.openFiles / 2))};
}
http {
  server_tokens off;
  access_log off;
  # Server names and the maps hold a line per served name (a map also per sub-second time),
  # names up to a DNS name's 253 characters: room for all of them.
  server_names_hash_max_size ${hashSize};
  server_names_hash_bucket_size 512;
  map_hash_max_size ${hashSize};
  map_hash_bucket_size 512;
  client_body_temp_path ${s.prefix}/tmp/body;
  proxy_temp_path ${s.prefix}/tmp/proxy;
  fastcgi_temp_path ${s.prefix}/tmp/fastcgi;
  uwsgi_temp_path ${s.prefix}/tmp/uwsgi;
  scgi_temp_path ${s.prefix}/tmp/scgi;
  keepalive_timeout 120s;
  keepalive_requests 100000;
  client_max_body_size ${s.maxBodyBytes};
  # Request bodies stream to the app as they arrive. Answers are read into memory buffers as
  # fast as the app writes them (never to disk: when they are full nginx stops reading); an app
  # that streams (server-sent events) answers with \`X-Accel-Buffering: no\` to have each piece
  # passed on at once.
  proxy_http_version 1.1;
  proxy_request_buffering off;
  proxy_buffering on;
  proxy_max_temp_file_size 0;
  proxy_read_timeout 300s;
  proxy_send_timeout 300s;
  proxy_connect_timeout 10s;
  log_format lj '$time_iso8601 $lj_app $request_method $request_uri $status \${lj_ms}ms -> $lj_upstream$lj_why';
  log_format lj_report '$lj_app $request_method $request_uri $status \${lj_ms}ms -> $lj_upstream$lj_why';
  # A request the overflow listener took is logged with the instance lj serve's router sent it
  # to (its X-LJ-Instance header, never passed to the client), not with the socket: nginx's line
  # is the request's only one. Every instance's address is an exact entry: the regular
  # expression runs only for a request retried on the overflow listener.
  proxy_hide_header X-LJ-Instance;
  map $upstream_addr $lj_upstream {
    "" "-";
${instances.map((x) => `    ${str(x)} ${str(x)};\n`).join("")}    ${str(`unix:${s.overflow}`)} $upstream_http_x_lj_instance;
    "~^(?<lj_tried>.*)unix:" "$lj_tried$upstream_http_x_lj_instance";
    default $upstream_addr;
  }
  # $request_time is seconds with milliseconds: the router's lines say milliseconds. Times under
  # a second (nearly all) are found by exact value; longer ones by a regular expression.
  map $request_time $lj_ms {
${SUB_SECOND}    "~^(?<s>[0-9]+)\\.(?<f>[0-9]+)$" $s$f;
    default $request_time;
  }
  # Only a refusal of nginx's own (not an app's 413) says why. Every map here is looked up by
  # exact value for the usual answers: a regular expression runs only for a 413.
  map $status $lj_why {
    default "";
    413 $lj_why413;
  }
  map $upstream_status $lj_why413 {
    "~413$" "";
    default ${str(` (${tooLargeWhy(s.maxBodyBytes)})`)};
  }
  map $status $lj_report {
    default 0;
    413 1;
${Array.from(
  { length: 100 },
  (_, i) => `    ${500 + i} 1;
`,
).join("")}  }
  map $http_upgrade $lj_connection {
    default upgrade;
    "" "";
  }
${fwd.maps}  proxy_set_header Host $http_host;
  proxy_set_header Upgrade $http_upgrade;
  proxy_set_header Connection $lj_connection;
${fwd.headers}
  upstream lj_serve {
    server 127.0.0.1:${s.otherPort};
    keepalive 16;
  }
${upstreams}
  # Not an app's: the API, git, \`lj run\` sessions, ACME challenges.
  server {
${listen(" default_server reuseport")}    server_name _;
${ljServeLocations()}  }
  # APP${suffix} for an app that does not exist.
  server {
${listen()}    server_name "~^(?<lj_app>${NAME_PATTERN})${escapeRe(suffix)}$";
    access_log ${s.accessLog} lj buffer=4k flush=${s.flushMs}ms;
    error_page 404 @lj404;
    location @lj404 {
      default_type "text/html; charset=utf-8";
      return 404 ${str(pageHtml(...PAGES.noSuchApp("$lj_app")), true)};
    }
${challengeLocation()}    location / {
      return 404;
    }
  }
${appServers}${
  https
    ? `  # HTTPS without a name this server has a certificate for (no SNI): the first certificate,
  # then routed by Host as over HTTP (lj serve for any Host that is not an app's).
  server {
${listenTls(" default_server reuseport")}    ssl_certificate ${t.certs[0]!.cert};
    ssl_certificate_key ${t.certs[0]!.key};
${ljServeLocations()}  }
`
    : ""
}${redirects}
  # The generation this file is: lj serve polls it after a reload until the new one serves.
  server {
    listen 127.0.0.1:${s.generationPort};
    access_log off;
    location = /lj-generation {
      return 200 "${generation}";
    }
  }
}
`;
}
