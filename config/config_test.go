package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestGoodConfig(t *testing.T) {
	c, err := Load("../testdata/config/good.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "mx.example.com" || c.LocalDomains[1] != "example.net" {
		t.Errorf("hostname/domains not normalised: %q %v", c.Hostname, c.LocalDomains)
	}
	if got := c.TrustedNetworks[2].String(); got != "198.51.100.7/32" {
		t.Errorf("bare address became %s", got)
	}
	if c.DNS.Resolvers[0] != "127.0.0.1:53" || c.DNS.Resolvers[1] != "[::1]:53" {
		t.Errorf("resolvers %v", c.DNS.Resolvers)
	}
	if c.Listen.GreetDelay.D() != 6*time.Second || c.Limits.WriteTimeout.D() != time.Minute {
		t.Errorf("durations: %v %v", c.Listen.GreetDelay.D(), c.Limits.WriteTimeout.D())
	}
	if len(c.Rules) != 1 || c.Rules[0] != "rules.d/*.toml" {
		t.Errorf("rules %v", c.Rules)
	}
	// The effective config prints back as a config that loads to the same.
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Parse("printed", b)
	if err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, b)
	}
	b2, _ := c2.Encode()
	if string(b) != string(b2) {
		t.Errorf("printed config changes when loaded again:\n%s\n---\n%s", b, b2)
	}
}

// Every mistake is reported at its file and line.
func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name, toml, want string
	}{
		{"unknown key", "hostname = \"mx.example.com\"\n\n[listen]\ngreet_dalay = \"6s\"\n", "f.toml:4: unknown key \"listen.greet_dalay\""},
		{"unknown key in inline table", "hostname = \"mx.example.com\"\n[backend]\nx = { a = 1, b = 2 }\n", "f.toml:3: unknown key"},
		{"unknown table", "hostname = \"mx.example.com\"\n[lisen]\naddresses = [\":25\"]\n", "f.toml:2: unknown key \"lisen\""},
		{"bad duration", "hostname = \"mx.example.com\"\n[listen]\ngreet_delay = \"6x\"\n", "f.toml:3: listen.greet_delay: bad duration \"6x\""},
		{"negative duration", "hostname = \"mx.example.com\"\n[listen]\ngreet_delay = \"-1s\"\n", "f.toml:3:"},
		{"bad CIDR", "hostname = \"mx.example.com\"\ntrusted_networks = [\"10.0.0.0/33\"]\n", "f.toml:2: trusted_networks: bad network \"10.0.0.0/33\""},
		{"host bits", "hostname = \"mx.example.com\"\ntrusted_networks = [\"10.0.0.1/8\"]\n", "f.toml:2: trusted_networks: bad network \"10.0.0.1/8\": host bits set (did you mean 10.0.0.0/8?)"},
		{"bad identity", "hostname = \"mx.example.com\"\n[backend]\nclient_identity = \"smtp\"\n", "f.toml:3: backend.client_identity: bad client_identity \"smtp\": want one of none, xclient, proxy-v1, proxy-v2"},
		{"wrong type", "hostname = \"mx.example.com\"\n[limits]\nmax_connections = \"lots\"\n", "f.toml:3: limits.max_connections: incompatible types"},
		{"syntax", "hostname = \"mx.example.com\"\n[listen\n", "f.toml:3: expected '.' or ']' to end table name"},
		{"bad hostname", "hostname = \"mx_1.example.com\"\n", "f.toml:1: hostname \"mx_1.example.com\" is not a valid host name"},
		{"empty hostname", "hostname = \"\"\n", "f.toml:1: hostname is required"},
		{"bad domain", "hostname = \"mx.example.com\"\nlocal_domains = [\"ex ample.com\"]\n", "f.toml:2: local_domains:"},
		{"zero limit", "hostname = \"mx.example.com\"\n[limits]\nmax_recipients = 0\n", "f.toml:3: limits.max_recipients must be greater than zero"},
		{"short line limit", "hostname = \"mx.example.com\"\n[limits]\nmax_line_length = 512\n", "f.toml:3: limits.max_line_length must be at least 1000"},
		{"per-ip above total", "hostname = \"mx.example.com\"\n[limits]\nmax_connections = 5\nmax_connections_per_ip = 6\n", "f.toml:4: limits.max_connections_per_ip (6) is above limits.max_connections (5)"},
		{"bad listen", "hostname = \"mx.example.com\"\n[listen]\naddresses = [\"25\"]\n", "f.toml:3: listen.addresses: \"25\" is not host:port"},
		{"bad resolver", "hostname = \"mx.example.com\"\n[dns]\nresolvers = [\"dns.example\"]\n", "f.toml:3: dns.resolvers: \"dns.example\" is not an IP address or ip:port"},
		{"ttl order", "hostname = \"mx.example.com\"\n[dns]\nmin_ttl = \"2h\"\n", "f.toml:3: dns.min_ttl (2h0m0s) is above dns.max_ttl (1h0m0s)"},
		{"tls half", "hostname = \"mx.example.com\"\n[tls]\ncert_file = \"/x.pem\"\n", "f.toml:2: tls: cert_file and key_file go together"},
		{"tls missing", "hostname = \"mx.example.com\"\n[tls]\ncert_file = \"/nonexistent.pem\"\nkey_file = \"/nonexistent.key\"\n", "f.toml:3: tls: open /nonexistent.pem"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("f.toml", []byte(c.toml))
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q\nwant it to contain %q", err, c.want)
			}
		})
	}
}

// All problems are reported at once, not one per run.
func TestConfigSeveralErrors(t *testing.T) {
	_, err := Parse("f.toml", []byte("hostname = \"mx.example.com\"\nfoo = 1\n[limits]\nmax_recipients = 0\nbar = 2\n"))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"f.toml:2: unknown key \"foo\"", "f.toml:5: unknown key \"limits.bar\"", "f.toml:4: limits.max_recipients"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
}

func TestDefaultsAreValid(t *testing.T) {
	c := Default()
	c.Hostname = "mx.example.com"
	if errs := c.validate(); len(errs) > 0 {
		t.Fatalf("defaults do not validate: %v", errs)
	}
}

func TestMissingFile(t *testing.T) {
	if _, err := Load("/nonexistent/mxguard.toml"); !os.IsNotExist(err) {
		t.Errorf("got %v", err)
	}
}

func TestScanKeys(t *testing.T) {
	src := `a = 1
[t]
b.c = "x" # comment
'q.k' = [
  1,
  2,
]
d = """
e = 3
"""
f = { g = 1, "h.i" = 2 }
[[arr]]
j = 1
`
	kl := scanKeys(src)
	want := map[string]int{
		"a": 1, "t": 2, "t\x1fb\x1fc": 3, "t\x1fq.k": 4, "t\x1fd": 8, "t\x1ff": 11,
		"t\x1ff\x1fg": 11, "t\x1ff\x1fh.i": 11, "arr": 12, "arr\x1fj": 13,
	}
	for k, line := range want {
		if kl[k] != line {
			t.Errorf("%q at line %d, want %d", k, kl[k], line)
		}
	}
	if kl["arr\x1f[0]"] != 12 || kl["arr\x1f[0]\x1fj"] != 13 {
		t.Errorf("indexed array table keys: %v", kl)
	}
	kl2 := scanKeys("[[list]]\nname = \"a\"\n\n[[list]]\nname = \"b\"\nentries = [\n \"x\",\n]\n")
	if kl2.line([]string{"list", "[1]", "entries"}) != 6 || kl2.line([]string{"list", "[1]"}) != 4 || kl2.line([]string{"list", "[0]", "name"}) != 2 {
		t.Errorf("second [[list]]: %v", kl2)
	}
	if _, ok := kl["t\x1fe"]; ok {
		t.Error("a line inside a multi-line string was taken for a key")
	}
}

// The example config in docs/ stays valid.
func TestExampleConfig(t *testing.T) {
	if _, err := Load("../docs/mxguard.example.toml"); err != nil {
		t.Fatal(err)
	}
}
