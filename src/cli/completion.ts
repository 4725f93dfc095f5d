/**
 * `lj completion bash|zsh|fish`: a completion script written from the command tree itself, so
 * it names every command, subcommand and flag there is (and nothing that is gone).
 */
import { type CommandDef, defineCommand } from "citty";
import { usageError } from "../errors.ts";

interface Node {
  name: string;
  description: string;
  flags: string[];
  subs: Node[];
}

async function resolve<T>(v: T | (() => T | Promise<T>) | undefined): Promise<T | undefined> {
  return typeof v === "function" ? await (v as () => T | Promise<T>)() : v;
}

async function tree(name: string, cmd: CommandDef, depth = 0): Promise<Node> {
  const meta = (await resolve(cmd.meta)) as { description?: string } | undefined;
  const args = ((await resolve(cmd.args)) ?? {}) as Record<
    string,
    { type?: string; alias?: string | string[] }
  >;
  const flags = ["--help"];
  for (const [k, def] of Object.entries(args)) {
    if (def.type === "positional") continue;
    flags.push(`--${k}`);
    for (const a of [def.alias ?? []].flat()) flags.push(a.length === 1 ? `-${a}` : `--${a}`);
  }
  const subs: Node[] = [];
  const table = (await resolve(cmd.subCommands)) as
    | Record<string, CommandDef | (() => Promise<CommandDef>)>
    | undefined;
  if (table && depth < 2) {
    for (const [n, sub] of Object.entries(table)) subs.push(await tree(n, (await resolve(sub))!, depth + 1));
  }
  return { name, description: meta?.description ?? "", flags, subs };
}

const words = (xs: string[]) => xs.join(" ");
/** Safe inside single quotes in all three shells. */
const sq = (s: string) => s.replace(/'/g, "").replace(/\s+/g, " ").slice(0, 80);

export function bashScript(root: Node): string {
  const cases = root.subs
    .map((c) => {
      const second = c.subs.length > 0 ? words(c.subs.map((s) => s.name)) : "";
      const subFlags = c.subs.map((s) => `        ${s.name}) flags="${words(s.flags)}" ;;`).join("\n");
      return `    ${c.name})
      subs="${second}"; flags="${words(c.flags)}"
      case "\${COMP_WORDS[2]:-}" in
${subFlags || "        '') ;;"}
      esac ;;`;
    })
    .join("\n");
  return `# bash completion for lj: source it, or put it in /etc/bash_completion.d/lj
_lj() {
  local cur=\${COMP_WORDS[COMP_CWORD]} subs="" flags=""
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "${words(root.subs.map((c) => c.name))} --help --version" -- "$cur"))
    return
  fi
  case "\${COMP_WORDS[1]}" in
${cases}
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  elif [ "$COMP_CWORD" -eq 2 ] && [ -n "$subs" ]; then
    COMPREPLY=($(compgen -W "$subs" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -F _lj lj
`;
}

export function zshScript(root: Node): string {
  const describe = (ns: Node[]) =>
    ns.map((n) => `'${n.name}:${sq(n.description).replace(/:/g, "\\:")}'`).join(" ");
  const cases = root.subs
    .filter((c) => c.subs.length > 0)
    .map((c) => `      ${c.name}) cmds=(${describe(c.subs)}); _describe 'subcommand' cmds ;;`)
    .join("\n");
  const flagCases = root.subs.map((c) => `      ${c.name}) compadd -- ${words(c.flags)} ;;`).join("\n");
  return `#compdef lj
# zsh completion for lj: put it in a directory of $fpath as _lj, or source it
_lj() {
  local -a cmds
  if (( CURRENT == 2 )); then
    cmds=(${describe(root.subs)})
    _describe 'command' cmds
  elif [[ "$words[CURRENT]" == -* ]]; then
    case "$words[2]" in
${flagCases}
    esac
  elif (( CURRENT == 3 )); then
    case "$words[2]" in
${cases}
      *) _files ;;
    esac
  else
    _files
  fi
}
if [[ "$funcstack[1]" == "_lj" ]]; then _lj "$@"; else compdef _lj lj; fi
`;
}

export function fishScript(root: Node): string {
  const lines = [
    "# fish completion for lj: put it in ~/.config/fish/completions/lj.fish",
    "complete -c lj -f",
  ];
  for (const c of root.subs) {
    lines.push(`complete -c lj -n __fish_use_subcommand -a ${c.name} -d '${sq(c.description)}'`);
    for (const s of c.subs) {
      lines.push(
        `complete -c lj -n '__fish_seen_subcommand_from ${c.name}; and not __fish_seen_subcommand_from ${words(c.subs.map((x) => x.name))}' -a ${s.name} -d '${sq(s.description)}'`,
      );
    }
    for (const f of c.flags.filter((f) => f.startsWith("--"))) {
      lines.push(`complete -c lj -n '__fish_seen_subcommand_from ${c.name}' -l ${f.slice(2)}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

/** `lj completion`, over the command tree it completes (given by main.ts, which holds it). */
export const completionCommand = (main: CommandDef) =>
  defineCommand({
    meta: { name: "completion", description: "Print a shell completion script: lj completion bash|zsh|fish" },
    args: { shell: { type: "positional", required: true, description: "bash, zsh or fish" } },
    async run({ args }) {
      const root = await tree("lj", main);
      const make = { bash: bashScript, zsh: zshScript, fish: fishScript }[args.shell as "bash"];
      if (!make) throw usageError(`no completion for "${args.shell}"`, "lj completion bash, zsh or fish");
      process.stdout.write(make(root));
    },
  });
