// Signs in to the gateway with the TypeScript MCP SDK 1.x's OAuth client, as a host embedding it would.
//
//   node ts_oauth_client.cjs SDK_DIR MCP_URL CALLBACK_URL [CLIENT_METADATA_URL]
//
// The SDK discovers the authorization server, registers (or uses CLIENT_METADATA_URL as its client id),
// and asks to send the person to the authorization URL: this prints {"authorize": URL} on a line and
// reads back, on stdin, the URL the browser came back to. Then it finishes the sign-in, connects again,
// lists the tools, calls, starts a slow job (wait_s 0) and collects it in a second session, and prints one
// JSON line: {"tools": [names], "call": result, "collected": result, "client_id", "tokens": {access, refresh}}.
"use strict";

const { createRequire } = require("node:module");
const path = require("node:path");
const readline = require("node:readline");

async function main() {
  const [sdkDir, mcpUrl, callbackUrl, metadataUrl] = process.argv.slice(2);
  const sdk = createRequire(path.join(path.resolve(sdkDir), "package.json"));
  const { Client } = sdk("@modelcontextprotocol/sdk/client/index.js");
  const { StreamableHTTPClientTransport } = sdk("@modelcontextprotocol/sdk/client/streamableHttp.js");
  const { UnauthorizedError } = sdk("@modelcontextprotocol/sdk/client/auth.js");
  const lines = readline.createInterface({ input: process.stdin });
  const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

  const kept = {};
  const provider = {
    get redirectUrl() {
      return callbackUrl;
    },
    get clientMetadata() {
      return {
        client_name: "TypeScript SDK host",
        redirect_uris: [callbackUrl],
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        token_endpoint_auth_method: "none",
      };
    },
    clientMetadataUrl: metadataUrl,
    clientInformation: () => kept.client,
    saveClientInformation: (client) => {
      kept.client = client;
    },
    tokens: () => kept.tokens,
    saveTokens: (tokens) => {
      kept.tokens = tokens;
    },
    redirectToAuthorization: (url) => {
      process.stdout.write(JSON.stringify({ authorize: url.toString() }) + "\n");
    },
    saveCodeVerifier: (verifier) => {
      kept.verifier = verifier;
    },
    codeVerifier: () => kept.verifier,
  };

  const connect = async () => {
    const client = new Client({ name: "ts-oauth-test", version: "1.0.0" });
    const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
    await client.connect(transport);
    return { client, transport };
  };

  let connected;
  try {
    connected = await connect();
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
    const back = new URL(await nextLine());
    const first = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
    await first.finishAuth(back.searchParams.get("code"));
    connected = await connect();
  }
  const { client } = connected;
  const tools = await client.listTools();
  const call = await client.callTool({ name: "ask_swarm", arguments: { prompt: "from typescript" } });
  const handle = await client.callTool({ name: "ask_swarm", arguments: { prompt: "slow", wait_s: 0 } });
  await client.close();
  // A fresh session, as Claude.ai may open for every call: the same person collects the job.
  const second = (await connect()).client;
  const collected = await second.callTool({
    name: "get_result",
    arguments: { job_id: handle.structuredContent.job_id, wait_s: 30 },
  });
  await second.close();
  process.stdout.write(
    JSON.stringify({
      tools: tools.tools.map((tool) => tool.name),
      call,
      collected,
      client_id: kept.client && kept.client.client_id,
      tokens: { access: kept.tokens.access_token, refresh: kept.tokens.refresh_token },
    }) + "\n",
  );
  lines.close();
}

main().catch((error) => {
  process.stderr.write(String((error && error.stack) || error) + "\n");
  process.exit(1);
});
