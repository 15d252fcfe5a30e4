// What an MCPB host does with a bundle before it starts it, done by the MCPB library itself:
// unpack BUNDLE into DIR, read its manifest, and work out the server's command with the user's
// settings substituted (getMcpConfigForManifest, as Claude Desktop does).
// Usage: node mcpb_host.mjs BUNDLE.mcpb DIR USER_CONFIG.json; prints {"manifest", "config"} as JSON.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { getMcpConfigForManifest, unpackExtension } from "@anthropic-ai/mcpb";

const [bundle, dir, userConfigFile] = process.argv.slice(2);
if (!(await unpackExtension({ mcpbPath: bundle, outputDir: dir, silent: true }))) {
  throw new Error(`mcpb could not unpack ${bundle}`);
}
const manifest = JSON.parse(await readFile(path.join(dir, "manifest.json"), "utf8"));
const userConfig = JSON.parse(await readFile(userConfigFile, "utf8"));
const config = await getMcpConfigForManifest({
  manifest,
  extensionPath: dir,
  systemDirs: { HOME: process.env.HOME ?? dir, DESKTOP: dir, DOCUMENTS: dir, DOWNLOADS: dir },
  userConfig,
  pathSeparator: path.sep,
});
process.stdout.write(JSON.stringify({ manifest, config }));
