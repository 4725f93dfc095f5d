import { definePlugin } from "lightjail/plugin";

/** Rack apps run with rackup (through bundler when there are gems); plain scripts with ruby. */
export default definePlugin({
  plan(app, draft) {
    const hasGems = /^\s*(gem|gemspec)\s/m.test(app.read("Gemfile") ?? "");
    if (app.exists("config.ru")) {
      draft.processes.web = { command: `${hasGems ? "bundle exec " : ""}rackup -o 0.0.0.0 -p $PORT` };
    } else {
      const main = ["app.rb", "server.rb", "main.rb"].find((f) => app.exists(f));
      if (main) draft.processes.web = { command: `${hasGems ? "bundle exec " : ""}ruby ${main}` };
    }
    return draft;
  },
});
