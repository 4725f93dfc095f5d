import { definePlugin } from "lightjail/plugin";

interface PackageJson {
  main?: string;
  scripts?: Record<string, string>;
  engines?: { node?: string };
}

/** The web process follows package.json: `npm start`, else its main file, else a usual name. */
export default definePlugin({
  plan(app, draft) {
    const pkg = app.readJson<PackageJson>("package.json") ?? {};
    const start = pkg.scripts?.start;
    if (start) draft.processes.web = { command: start };
    else {
      const main = [pkg.main, "server.js", "index.js", "app.js"].find((f) => f && app.exists(f));
      if (main) draft.processes.web = { command: `node ${main}` };
    }
    return draft;
  },
});
