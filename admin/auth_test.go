package admin

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func hash(t *testing.T, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func TestAuthFileErrors(t *testing.T) {
	good := hash(t, "secret")
	tests := []struct {
		name, content, want string // want: in the error; "" = no error
	}{
		{"one user", "admin:" + good + "\n", ""},
		{"comments and blanks", "# admins\n\n  admin:" + good + "  \nops:" + good + "\n", ""},
		{"apr1 (htpasswd without -B)", "admin:$apr1$abc$def\n", ":1: user \"admin\": not a bcrypt hash (htpasswd -B makes one)"},
		{"plain text", "# x\nadmin:secret\n", ":2: user \"admin\": not a bcrypt hash"},
		{"no colon", "admin\n", ":1: want user:bcrypt-hash"},
		{"no name", ":" + good + "\n", ":1: want user:bcrypt-hash"},
		{"twice", "a:" + good + "\nb:" + good + "\na:" + good + "\n", `:3: user "a" again (first on line 1)`},
		{"empty", "# nobody\n", "no users"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.content)
			_, err := New(Options{AuthFile: path})
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("error %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path)):
				t.Errorf("error %v, want %q naming the file", err, tt.want)
			}
		})
	}
	if _, err := New(Options{AuthFile: "/nonexistent/htpasswd"}); err == nil || !strings.Contains(err.Error(), "auth file") {
		t.Errorf("a missing file: %v", err)
	}
	if _, err := Start(Options{Listen: "127.0.0.1:0", AuthFile: "/nonexistent/htpasswd"}); err == nil {
		t.Errorf("Start with a missing auth file did not fail")
	}
}

func TestAuth(t *testing.T) {
	file := writeFile(t, fmt.Sprintf("admin:%s\nprom:%s\n", hash(t, "s3cret"), hash(t, "scrape")))
	srv := serve(t, Options{AuthFile: file, Recent: fixtureRecent(io.Discard), Registry: testRegistry()})
	tests := []struct {
		name, path, user, pw string
		basic                bool
		status               int
	}{
		{"no credentials", "/", "", "", false, 401},
		{"good", "/", "admin", "s3cret", true, 200},
		{"second user", "/metrics", "prom", "scrape", true, 200},
		{"wrong password", "/", "admin", "s3cret!", true, 401},
		{"another user's password", "/", "admin", "scrape", true, 401},
		{"unknown user", "/", "root", "s3cret", true, 401},
		{"empty", "/", "", "", true, 401},
		{"session page", "/session/REFUSED1", "", "", false, 401},
		{"metrics", "/metrics", "", "", false, 401},
		{"unknown path", "/nothing", "", "", false, 401},
		{"healthz is open for load balancers", "/healthz", "", "", false, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := do(t, http.MethodGet, srv.URL+tt.path, func(r *http.Request) {
				if tt.basic {
					r.SetBasicAuth(tt.user, tt.pw)
				}
			})
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Basic realm="mxguard admin"`) {
				t.Errorf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
}

// TestAuthTiming: an unknown user costs a bcrypt comparison as a known
// one does, so timing does not tell which names exist.
func TestAuthTiming(t *testing.T) {
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), 8)
	if err != nil {
		t.Fatal(err)
	}
	f, err := loadUsers(writeFile(t, "admin:"+string(h)+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := bcrypt.Cost(f.dummy); c != 8 {
		t.Errorf("dummy hash cost %d, want the users' 8", c)
	}
	timeIt := func(name string) time.Duration {
		best := time.Hour
		for range 3 {
			start := time.Now()
			f.check(name, "wrong")
			best = min(best, time.Since(start))
		}
		return best
	}
	known, unknown := timeIt("admin"), timeIt("nobody")
	if unknown < known/3 {
		t.Errorf("an unknown user took %v, a known one %v", unknown, known)
	}
	if !f.check("admin", "pw") || f.check("admin", "") || f.check("", "pw") {
		t.Error("check is wrong")
	}
}
