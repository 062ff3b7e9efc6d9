package admin

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// userFile is the basic auth file: one "user:bcrypt-hash" per line, as
// `htpasswd -B` writes it; blank lines and lines starting with '#' are
// skipped.
type userFile struct {
	users []user
	dummy []byte // compared against when no user matches: the same cost either way
}

type user struct {
	name []byte
	hash []byte
}

// loadUsers reads and checks the file: every line must name a user once
// and hold a bcrypt hash.
func loadUsers(path string) (*userFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("admin: auth file: %w", err)
	}
	f := &userFile{}
	seen := map[string]int{}
	cost := bcrypt.DefaultCost
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		bad := func(format string, a ...any) error {
			return fmt.Errorf("admin: auth file %s:%d: %s", path, n, fmt.Sprintf(format, a...))
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return nil, bad("want user:bcrypt-hash")
		}
		if prev, dup := seen[name]; dup {
			return nil, bad("user %q again (first on line %d)", name, prev)
		}
		c, err := bcrypt.Cost([]byte(hash))
		if err != nil {
			return nil, bad("user %q: not a bcrypt hash (htpasswd -B makes one): %v", name, err)
		}
		seen[name] = n
		cost = c
		f.users = append(f.users, user{[]byte(name), []byte(hash)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("admin: auth file %s: %w", path, err)
	}
	if len(f.users) == 0 {
		return nil, fmt.Errorf("admin: auth file %s: no users", path)
	}
	if f.dummy, err = bcrypt.GenerateFromPassword([]byte(rand.Text()), cost); err != nil {
		return nil, fmt.Errorf("admin: auth file: %w", err)
	}
	return f, nil
}

// check reports whether the credentials are a user's. Its time does not
// depend on which user matched, or whether one did: every name is compared
// in constant time and one bcrypt comparison is made whatever.
func (f *userFile) check(name, password string) bool {
	hash := f.dummy
	found := 0
	for _, u := range f.users {
		if subtle.ConstantTimeCompare(u.name, []byte(name)) == 1 {
			hash = u.hash
			found = 1
		}
	}
	ok := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
	return ok && found == 1
}

// require asks for basic auth on every path but the open ones.
func (f *userFile) require(next http.Handler, open ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range open {
			if r.URL.Path == p {
				next.ServeHTTP(w, r)
				return
			}
		}
		name, password, ok := r.BasicAuth()
		if !ok || !f.check(name, password) {
			w.Header().Set("WWW-Authenticate", `Basic realm="mxguard admin", charset="UTF-8"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
