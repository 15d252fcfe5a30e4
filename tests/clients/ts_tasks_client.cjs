// Runs long calls as 2025-11-25 tasks with the TypeScript MCP SDK 1.x's own tasks client
// (`client.experimental.tasks`), the generation VS Code speaks.
//
//   node ts_tasks_client.cjs SDK_DIR PLAN.json
//
// PLAN.json is {"server": {"command", "args", "env"}, "steps": [...]}; each step is
// {"op": "stream", "name", "arguments", "cancel"?: true}: `callToolStream`, recording every message
// (taskCreated, taskStatus, result, error); with "cancel", `tasks/cancel` as soon as the task exists.
// Or {"op": "list"}: tools/list then `tasks/list`. Prints one JSON array: per step
// {"messages": [...], "cancelled"?: task} or {"tools", "tasks"}; a thrown error is {"error"}.
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
  const client = new Client({ name: "tasks-test", version: "1.0.0" });
  await client.connect(transport);
  const capabilities = client.getServerCapabilities();
  const tools = (await client.listTools()).tools; // the SDK learns which tools take tasks from this
  const outcomes = [];
  for (const step of plan.steps) {
    try {
      if (step.op === "list") {
        outcomes.push({ capabilities, tools, tasks: (await client.experimental.tasks.listTasks()).tasks });
        continue;
      }
      const messages = [];
      let cancelled;
      const stream = client.experimental.tasks.callToolStream({ name: step.name, arguments: step.arguments || {} });
      for await (const message of stream) {
        const entry = { type: message.type };
        if (message.task) {
          entry.taskId = message.task.taskId;
          entry.status = message.task.status;
          entry.statusMessage = message.task.statusMessage;
          entry.pollInterval = message.task.pollInterval;
        }
        if (message.result) entry.result = message.result;
        if (message.error) entry.error = { code: message.error.code, message: String(message.error.message) };
        messages.push(entry);
        if (message.type === "taskCreated" && step.cancel) {
          cancelled = await client.experimental.tasks.cancelTask(message.task.taskId);
        }
      }
      outcomes.push({ messages, cancelled });
    } catch (err) {
      outcomes.push({ error: { name: err.name, code: err.code, message: String(err.message) } });
    }
  }
  await client.close();
  process.stdout.write(JSON.stringify(outcomes) + "\n");
}

main().catch((err) => {
  process.stderr.write(`ts_tasks_client: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
