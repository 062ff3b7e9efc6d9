package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// Hostile input: whatever the file holds, Parse does not panic, every
// problem it reports names the file (and a line within it, when it gives
// one), and a configuration it accepts prints (check-config) as a file
// that loads to the same configuration.
//
//	go test -run XXX -fuzz FuzzParse -fuzztime 60s ./config
func FuzzParse(f *testing.F) {
	for _, p := range []string{"../testdata/config/good.toml", "../docs/mxguard.example.toml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"",
		"hostname = \"mx.example.com\"\n",
		"hostname = \"mx.example.com\"\n\n[listen]\ngreet_dalay = \"6s\"\n",
		"hostname = \"mx.example.com\"\n[backend]\nx = { a = 1, b = 2 }\n",
		"hostname = \"mx.example.com\"\n[listen]\ngreet_delay = \"-1s\"\n",
		"hostname = \"mx.example.com\"\ntrusted_networks = [\"10.0.0.1/8\", \"::ffff:192.0.2.1\", \"fe80::1%eth0\"]\n",
		"hostname = \"mx.example.com\"\n[limits]\nmax_connections = \"lots\"\n",
		"hostname = \"mx.example.com\"\n[listen\n",
		"hostname = \"MX.Example.COM.\"\nlocal_domains = [\"Example.COM.\", \"ex ample.com\"]\n",
		"hostname = \"mx.example.com\"\n[limits]\nmax_connections = 5\nmax_connections_per_ip = 6\nmax_line_length = 512\n",
		"hostname = \"mx.example.com\"\n[dns]\nresolvers = [\"192.0.2.1\", \"[::1]:5353\", \"dns.example\"]\nmin_ttl = \"2h\"\n",
		"hostname = \"mx.example.com\"\n[headers]\ntag = [\"X-Spam: yes\\r\\nX-Injected: 1\", \"bad\"]\nscore_header = \"X Score\"\n",
		"hostname = \"mx.example.com\"\n[tls]\ncert_file = \"/nonexistent.pem\"\nkey_file = \"/nonexistent.key\"\n",
		"hostname = \"mx.example.com\"\n[[list]]\nname = \"a\"\n'q.k' = [\n 1,\n]\nd = \"\"\"\ne = 3\n\"\"\"\n",
		"hostname = \"mx.example.com\"\n[dnsbl]\nsites = [\"zen.spamhaus.org=127.0.0.[2..11]*3\"]\nallowlist_threshold = 1\nthreshold = 0\n",
		"hostname = \"mx.example.com\"\n[dmarc]\nenabled = true\n[spf]\nenabled = false\n[log]\npath = \"\"\nlevel = \"loud\"\n",
		"hostname = \"mx.example.com\"\n[message]\nspool_dir = \"/nonexistent\"\n[backend]\naddress = \"backend\"\nclient_identity = \"smtp\"\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data)
		if err != nil {
			lines := strings.Count(string(data), "\n") + 1
			errs := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			}
			if len(errs) == 0 {
				t.Fatalf("empty error %q", err)
			}
			for _, e := range errs {
				var ce *Error
				if !errors.As(e, &ce) || ce.File != "fuzz.toml" {
					t.Fatalf("error %q (%T) is not placed in fuzz.toml", e, e)
				}
				if !strings.HasPrefix(e.Error(), "fuzz.toml:") {
					t.Fatalf("error %q does not start with the file name", e)
				}
				if ce.Line < 0 || ce.Line > lines {
					t.Fatalf("error %q names line %d of a %d-line file", e, ce.Line, lines)
				}
			}
			return
		}
		// What check-config prints loads to the same configuration.
		b, err := c.Encode()
		if err != nil {
			t.Fatalf("accepted config does not print: %v", err)
		}
		c2, err := Parse("printed.toml", b)
		if err != nil {
			t.Fatalf("printed config does not load: %v\n%s", err, b)
		}
		b2, err := c2.Encode()
		if err != nil || string(b) != string(b2) {
			t.Fatalf("printed config changes when loaded again (%v):\n%s\n---\n%s", err, b, b2)
		}
	})
}
