import { definePlugin } from "lightjail/plugin";

/** The web process: a Procfile wins (applied later); else the usual entry file names. */
export default definePlugin({
  plan(app, draft) {
    const main = ["app.py", "main.py", "server.py", "wsgi.py"].find((f) => app.exists(f));
    if (main) draft.processes.web = { command: `python ${main}` };
    return draft;
  },
});
