// Package auth decides who is calling and what they may do: it turns the
// bearer credential of a call into a Principal (a tenant and its scopes),
// carries it in the context, and refuses a call whose method needs a scope
// the principal lacks.
//
// # Threat model
//
// The gateway is reachable by anyone on its network. Without this package
// any of them could read, search and delete every tenant's documents, spend
// the GPUs, and list the backends' internal addresses. With it:
//
//   - Every call carries "authorization: Bearer <token>" (gRPC metadata;
//     grpc-gateway forwards the REST header under the same name, so both
//     paths meet the same interceptors). The token is an API key (package
//     auth/apikey) or a JWT signed by an identity provider (auth/jwtauth).
//   - The tenant comes from the credential, never from the request: code
//     behind the interceptors reads it with FromContext, and every store
//     statement is scoped by it. Another tenant's document is NOT_FOUND,
//     never PERMISSION_DENIED, so that ids cannot be probed.
//   - Each method needs one scope (MethodScopes); a method missing from
//     the table is refused (fail closed), so a new RPC is private until
//     someone decides otherwise. Only health checks are open.
//   - Errors name what is wrong (missing, malformed, unknown, revoked,
//     expired, wrong audience, missing scope) and never repeat the token.
//
// Out of scope here: transport security (TLS is the listeners' job; a
// bearer token over plain text is only as safe as the network), brute
// force of API keys (256 random bits: infeasible), and denial of service
// by valid tenants (package quota).
//
// # Modes
//
// Mode says which credentials are accepted: "keys" (the default), "jwt",
// "keys+jwt", or "none". In "none" every call acts as tenant "default"
// with every scope; it exists for local development, and the program must
// then listen on loopback addresses only: RequireLoopback refuses any
// other listen address, and the program should log that auth is off.
package auth
