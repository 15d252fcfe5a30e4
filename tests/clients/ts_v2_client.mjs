// Drives the server over streamable HTTP with the TypeScript SDK v2 (`@modelcontextprotocol/client` 2.x,
// what new hosts embed), pinned to the 2026-07-28 protocol, and runs long calls as tasks with
// `@modelcontextprotocol/ext-tasks` (the Tasks extension requester, Claude Code's generation).
//
//   node ts_v2_client.mjs PLAN.json        (copied next to the node_modules that hold both packages)
//
// PLAN.json is {"url", "token"?, "steps": [...]}; each step is {"op": "list"}, {"op": "call", "name",
// "arguments", "progress"?: true} (a plain tools/call), or {"op": "task", "name", "arguments",
// "cancel"?: true} (through a task session: settles to its outcome; with "cancel", cancels the task
// as soon as it exists). Also {"op": "raw", "request"}: one JSON-RPC request through the raw dispatch.
// Prints one JSON array: per step {"ok": true, ...} or {"ok": false, "error": {"name", "code", "message"}}.
import fs from "node:fs";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { createTaskSessionFromClient } from "@modelcontextprotocol/ext-tasks/client";

const VERSION = "2026-07-28";
const CLIENT_INFO = { name: "v2-tasks-test", version: "1.0.0" };

function routing(request) {
  const params = request.params || {};
  const name = request.method.startsWith("tasks/") ? params.taskId : request.method === "tools/call" ? params.name : undefined;
  return name === undefined ? {} : { "mcp-name": String(name) };
}

/** One JSON-RPC request as one POST, as the ext-tasks README says a stateless HTTP host does it. */
function rawDispatcher(url, token, posted) {
  let next = 1;
  return async (message) => {
    const request = { jsonrpc: "2.0", id: `raw-${next++}`, ...message };
    const headers = {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": VERSION,
      "mcp-method": request.method,
      ...routing(request),
    };
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(request) });
    const text = await response.text();
    posted.push({ method: request.method, status: response.status, headers: { "mcp-name": headers["mcp-name"] } });
    const bodies = (response.headers.get("content-type") || "").includes("text/event-stream")
      ? text.split("\n").filter((line) => line.startsWith("data:")).map((line) => JSON.parse(line.slice(5)))
      : [JSON.parse(text)];
    const reply = bodies.find((body) => body.id === request.id) || bodies[bodies.length - 1];
    return reply.error ? { kind: "error", error: reply.error } : { kind: "result", result: reply.result };
  };
}

async function main() {
  const plan = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const requestInit = plan.token ? { headers: { authorization: `Bearer ${plan.token}` } } : undefined;
  const client = new Client(CLIENT_INFO, { versionNegotiation: { mode: { pin: VERSION } } });
  await client.connect(new StreamableHTTPClientTransport(new URL(plan.url), { requestInit }));
  const posted = [];
  const dispatch = rawDispatcher(plan.url, plan.token, posted);
  const session = createTaskSessionFromClient(client, {
    endpointId: "swarm-inference-mcp-test",
    rawDispatch: dispatch,
    v2RequestFraming: { protocolVersion: VERSION, clientInfo: CLIENT_INFO, clientCapabilities: {} },
  });
  const outcomes = [];
  for (const step of plan.steps) {
    const progress = [];
    try {
      if (step.op === "list") {
        outcomes.push({ ok: true, result: await client.listTools(), era: client.getProtocolEra() });
      } else if (step.op === "call") {
        const options = step.progress ? { onprogress: (p) => progress.push(p) } : {};
        const result = await client.callTool({ name: step.name, arguments: step.arguments || {} }, options);
        outcomes.push({ ok: true, result, progress });
      } else if (step.op === "raw") {
        outcomes.push({ ok: true, reply: await dispatch(step.request) });
      } else {
        const execution = await session.callTool(step.name, step.arguments || {});
        const events = [];
        const settling = execution.settle({
          onEvent: (event) => {
            events.push(event.type === "task" ? { type: "task", status: event.task.status, taskId: event.task.taskId, statusMessage: event.task.statusMessage } : { type: "outcome", status: event.outcome.status });
          },
        });
        if (step.cancel && execution.kind !== "immediate") await execution.cancel();
        const { outcome, lastTask } = await settling;
        outcomes.push({
          ok: true,
          kind: execution.kind,
          taskId: execution.handle ? execution.handle.taskId : lastTask && lastTask.taskId,
          status: outcome.status,
          result: outcome.status === "completed" ? outcome.result : undefined,
          events,
        });
      }
    } catch (err) {
      outcomes.push({ ok: false, error: { name: err.name, code: err.code, message: String(err.message) }, progress });
    }
  }
  await session.close();
  await client.close();
  process.stdout.write(JSON.stringify({ outcomes, posted }) + "\n");
}

main().catch((err) => {
  process.stderr.write(`ts_v2_client: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
