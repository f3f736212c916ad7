package admin

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// HasToken reports whether r carries ADMIN_TOKEN, compared in constant time:
// as a Bearer token (RFC 6750 §2.1), or as the password of Basic
// authentication (RFC 7617), which a browser asks for by itself, so that the
// status page and the API it calls work from a browser too.
func HasToken(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		_, got, ok = r.BasicAuth()
	}
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}
