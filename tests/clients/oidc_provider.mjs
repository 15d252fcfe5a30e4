// A real identity provider for the OAuth tests: oidc-provider (OpenID Certified) on loopback, issuing
// JWT access tokens for a resource (RFC 8707) to clients by the client-credentials grant.
//
//   node oidc_provider.mjs CONFIG.json
//
// CONFIG.json is {"port", "jwks": {"keys": [private JWKs]}, "clients": [...], "ttl"?, "opaque"?}: with
// "opaque", access tokens are opaque and answered at the introspection endpoint (RFC 7662). Prints
// "ready" once it listens on 127.0.0.1:port; stops on SIGTERM.
import fs from "node:fs";
import Provider from "oidc-provider";

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const provider = new Provider(`http://127.0.0.1:${config.port}`, {
  clients: config.clients,
  jwks: config.jwks,
  scopes: ["mcp"],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: "mcp",
        audience: resource,
        accessTokenFormat: config.opaque ? "opaque" : "jwt",
        accessTokenTTL: config.ttl || 300,
        jwt: { sign: { alg: "RS256" } },
      }),
    },
  },
});
provider.listen(config.port, "127.0.0.1", () => process.stdout.write("ready\n"));
process.on("SIGTERM", () => process.exit(0));
