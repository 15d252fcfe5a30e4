// Drives the server with the TypeScript MCP SDK (1.x), the client most desktop and IDE hosts embed.
//
//   node ts_client.cjs SDK_DIR PLAN.json
//
// SDK_DIR holds node_modules/@modelcontextprotocol/sdk (installed by the test run into a cache);
// PLAN.json is {"server": {"command", "args", "env"}, "timeout_ms"?, "steps": [...]}, each step
// {"op": "list"}, {"op": "call", "name", "arguments", "progress"?: true}, or {"op": "collect", ...}
// (a call, then get_result with its job_id for as long as it says "running"), or {"op": "pages", ...}
// (a call, then get_result with each page's next_offset; its result is {pages, reads}: every page, and
// every part of the first page's resource link, read on by each part's _meta.next_offset). Prints one JSON array:
// per step {"ok": true, "result", "progress"} or {"ok": false, "error": {"name", "code", "message"}}.
// A protocol error (such as the SDK's own output-schema check failing) is an "ok": false step.
"use strict";

const { createRequire } = require("node:module");
const fs = require("node:fs");
const path = require("node:path");

async function main() {
  const [sdkDir, planFile] = process.argv.slice(2);
  const sdk = createRequire(path.join(path.resolve(sdkDir), "package.json"));
  const { Client } = sdk("@modelcontextprotocol/sdk/client/index.js");
  const { StdioClientTransport } = sdk("@modelcontextprotocol/sdk/client/stdio.js");
  const plan = JSON.parse(fs.readFileSync(planFile, "utf8"));

  const transport = new StdioClientTransport({
    command: plan.server.command,
    args: plan.server.args || [],
    env: plan.server.env,
    stderr: "pipe",
  });
  const client = new Client({ name: "cross-client-test", version: "1.0.0" });
  await client.connect(transport);
  const options = plan.timeout_ms ? { timeout: plan.timeout_ms } : {};
  const outcomes = [];
  for (const step of plan.steps) {
    const progress = [];
    try {
      let result;
      if (step.op === "list") {
        result = await client.listTools();
      } else {
        const callOptions = { ...options };
        if (step.progress) {
          callOptions.onprogress = (p) => progress.push(p);
        }
        result = await client.callTool({ name: step.name, arguments: step.arguments || {} }, undefined, callOptions);
        if (step.op === "pages") {
          const pages = [result];
          let page = result.structuredContent;
          while (page && page.next_offset !== undefined) {
            const next = { job_id: page.job_id, offset: page.next_offset };
            pages.push(await client.callTool({ name: "get_result", arguments: next }, undefined, callOptions));
            page = pages[pages.length - 1].structuredContent;
          }
          const reads = [];
          const link = (result.content || []).find((block) => block.type === "resource_link");
          let uri = link ? link.uri : null;
          while (uri) {
            const read = await client.readResource({ uri });
            reads.push(read);
            const meta = read.contents[0]._meta || {};
            uri = meta.next_offset !== undefined ? `${link.uri}/${meta.next_offset}` : null;
          }
          result = { pages, reads };
        }
        step.polls = 0;
        while (step.op === "collect" && result.structuredContent && result.structuredContent.status === "running") {
          step.polls += 1;
          const job = { job_id: result.structuredContent.job_id };
          result = await client.callTool({ name: "get_result", arguments: job }, undefined, callOptions);
        }
      }
      outcomes.push({ ok: true, result, progress, polls: step.polls });
    } catch (err) {
      outcomes.push({ ok: false, error: { name: err.name, code: err.code, message: String(err.message) }, progress });
    }
  }
  await client.close();
  process.stdout.write(JSON.stringify(outcomes) + "\n");
}

main().catch((err) => {
  process.stderr.write(`ts_client: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
