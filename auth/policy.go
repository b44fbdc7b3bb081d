package auth

import (
	"strings"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// Public marks a method that needs no credential. It is not a scope a
// credential can hold (ParseScopes refuses it), so a typo in the table
// cannot open a method by accident.
const Public Scope = "public"

// MethodScopes maps gRPC full method names ("/package.Service/Method") to
// the scope they need. A key ending in "/" ("/package.Service/") covers
// every method of that service not listed on its own. A method found in
// neither way is refused: see Required.
//
// The names are the ones protoc generates in gen/colpali/v1 (the
// *_FullMethodName constants); they are spelled out here so that this
// package does not import the generated code.
var MethodScopes = map[string]Scope{
	"/colpali.v1.EmbeddingService/EmbedQueries": ScopeEmbed,
	"/colpali.v1.EmbeddingService/EmbedImages":  ScopeEmbed,

	"/colpali.v1.DocumentService/GetDocument":   ScopeDocumentsRead,
	"/colpali.v1.DocumentService/ListDocuments": ScopeDocumentsRead,
	"/colpali.v1.DocumentService/Search":        ScopeDocumentsRead,

	"/colpali.v1.DocumentService/IngestDocument":       ScopeDocumentsWrite,
	"/colpali.v1.DocumentService/IngestDocumentStream": ScopeDocumentsWrite,
	"/colpali.v1.DocumentService/DeleteDocument":       ScopeDocumentsWrite,

	"/colpali.v1.BackendService/ListBackends": ScopeAdmin,

	// Health stays open: load balancers and orchestrators probe it
	// without credentials, and it tells nothing about tenants.
	"/grpc.health.v1.Health/": Public,
	// Reflection describes the whole API surface: admin only.
	"/grpc.reflection.v1.ServerReflection/":      ScopeAdmin,
	"/grpc.reflection.v1alpha.ServerReflection/": ScopeAdmin,
}

// Required returns the scope fullMethod needs in table (MethodScopes when
// nil), and false when the method is in neither its own entry nor its
// service's: such a method is refused whatever the credential.
func Required(table map[string]Scope, fullMethod string) (Scope, bool) {
	if table == nil {
		table = MethodScopes
	}
	if sc, ok := table[fullMethod]; ok {
		return sc, true
	}
	if i := strings.LastIndexByte(fullMethod, '/'); i > 0 {
		if sc, ok := table[fullMethod[:i+1]]; ok {
			return sc, true
		}
	}
	return "", false
}

// Authorize checks that p may call fullMethod under table (MethodScopes
// when nil): nil, or an error in class PermissionDenied naming the scope
// that is missing, or the method that no scope opens.
func Authorize(table map[string]Scope, fullMethod string, p Principal) error {
	need, ok := Required(table, fullMethod)
	switch {
	case !ok:
		return errclass.Errorf(errclass.PermissionDenied, "method %s is not open to any scope", fullMethod)
	case need == Public || p.Has(need):
		return nil
	}
	return errclass.Errorf(errclass.PermissionDenied, "method %s needs scope %q; the credential of tenant %q has %v", fullMethod, need, p.Tenant, p.Scopes)
}
