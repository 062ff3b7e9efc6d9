package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// exampleLine is a commented-out example in a shipped file: "#key = 1",
// "#[table]"; prose comments have a space after the "#".
var exampleLine = regexp.MustCompile(`(?m)^#([^ #\n])`)

// The configuration and rule file the Debian package installs in
// /etc/mxguard pass check-config as shipped and with every example in them
// uncommented.
func TestShippedConfig(t *testing.T) {
	cases := []struct {
		name      string
		uncomment bool
	}{{"as shipped", false}, {"examples uncommented", true}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range []string{"mxguard.toml", "rules.d/local.toml"} {
				data := mustRead(t, filepath.Join("../../dist", f))
				if c.uncomment {
					if !exampleLine.Match(data) {
						t.Errorf("%s has no examples", f)
					}
					data = exampleLine.ReplaceAll(data, []byte("$1"))
				}
				os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755)
				if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var out, errb bytes.Buffer
			if code := run([]string{"check-config", "-config", filepath.Join(dir, "mxguard.toml")}, &out, &errb); code != 0 {
				t.Fatalf("check-config: exit %d: %s", code, errb.String())
			}
			for _, want := range []string{`path = "/var/log/mxguard/mxguard.log"`, `address = "127.0.0.1:10025"`, `client_identity = "xclient"`} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("effective config lacks %s", want)
				}
			}
		})
	}
}
