package errclass

//lint:file-ignore ST1012 read as errclass.Unauthenticated, like the other classes

import "errors"

// The classes of a caller that is not let in. They are kept apart from the
// others because the edge must never confuse them: a failed credential is
// UNAUTHENTICATED whatever went wrong underneath (a database that is down
// while a key is looked up is Unavailable, not Unauthenticated: the key
// store wraps that under Unavailable instead).
var (
	// Unauthenticated: no credential, or one that is malformed, unknown,
	// revoked or expired (UNAUTHENTICATED, HTTP 401). The message says
	// which, and never repeats the credential.
	Unauthenticated = errors.New("unauthenticated")
	// PermissionDenied: the credential is good but lacks the scope the
	// method needs (PERMISSION_DENIED, 403). Never used for another
	// tenant's resource: that is NotFound, so that ids cannot be probed.
	PermissionDenied = errors.New("permission denied")
)
