package config

import (
	"net/url"
	"strings"
)

// Secret reports whether a variable holds a secret that is never shown:
// tokens, signing secrets, passwords.
func Secret(name string) bool {
	return strings.Contains(name, "TOKEN") || strings.Contains(name, "SECRET") || strings.Contains(name, "PASSWORD")
}

// RedactURL is the one form in which a configured URL is shown, in logs,
// errors and on the status page: a password (user:pass@) and query
// parameters that look like credentials are replaced by xxxxx; a URL that
// does not parse is not shown at all, since it may hold anything.
func RedactURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable, hidden)"
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	q := u.Query()
	changed := false
	for k := range q {
		if Secret(strings.ToUpper(k)) || strings.EqualFold(k, "key") {
			q.Set(k, "xxxxx")
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.String()
}
