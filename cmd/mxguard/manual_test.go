package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var updateManual = flag.Bool("update", false, "rewrite dist/man/ from the code (TestManual)")

const moduleRoot = "../.."

// section is the text of a page from the line start up to the next .SS
// or .SH.
func section(page, start string) string {
	i := strings.Index(page, start)
	if i < 0 {
		return ""
	}
	rest := page[i+len(start):]
	for _, next := range []string{"\n.SS ", "\n.SH "} {
		if j := strings.Index(rest, next); j >= 0 {
			rest = rest[:j]
		}
	}
	return rest
}

// The manual pages say every flag and every configuration key, each with
// its documentation, and dist/man/ holds what the code generates.
func TestManual(t *testing.T) {
	pages, err := manualPages(moduleRoot)
	if err != nil {
		t.Fatal(err)
	}
	page8, page5 := string(pages["mxguard.8"]), string(pages["mxguard.toml.5"])

	t.Run("flags", func(t *testing.T) {
		for _, c := range manCommands() {
			sec := section(page8, ".SS "+c.name+"\n")
			if sec == "" {
				t.Errorf("mxguard.8 has no section for the command %s", c.name)
			}
			if strings.TrimSpace(c.summary) == "" {
				t.Errorf("mxguard %s has no summary in the commands table", c.name)
			}
			for _, f := range c.flags {
				if strings.TrimSpace(f.usage) == "" {
					t.Errorf("mxguard %s -%s has no usage string: say what it does where the flag is defined", c.name, f.name)
				}
				if !strings.Contains(sec, `\fB\-`+roff(f.name)+`\fR`) {
					t.Errorf("mxguard.8 does not show mxguard %s -%s", c.name, f.name)
				}
			}
		}
	})

	t.Run("keys", func(t *testing.T) {
		tables, err := configTables(moduleRoot)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, tb := range tables {
			for _, k := range tb.keys {
				n++
				if k.doc == "" {
					t.Errorf("config key %s has no doc comment: document its field in config/", k.key)
				}
				if !strings.Contains(page5, "\n.TP\n\\fB"+roff(k.key)+"\\fR = ") {
					t.Errorf("mxguard.toml.5 does not show %s", k.key)
				}
			}
		}
		if n < 50 {
			t.Errorf("only %d keys found", n)
		}
	})

	t.Run("committed", func(t *testing.T) {
		for name, data := range pages {
			path := filepath.Join(moduleRoot, "dist", "man", name)
			if *updateManual {
				if err := os.WriteFile(path, data, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s is not what the code generates (%v); regenerate: %s", path, err, regenerate)
			}
		}
	})

	// groff's strictest warnings (-ww), as man(1) would render the pages.
	t.Run("groff", func(t *testing.T) {
		if _, err := exec.LookPath("groff"); err != nil {
			t.Skip("groff is not installed (apt-get install groff-base)")
		}
		for name, data := range pages {
			for _, dev := range []string{"-Tps", "-Tutf8"} {
				cmd := exec.Command("groff", "-ww", "-man", "-z", dev)
				cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
				cmd.Stdin = bytes.NewReader(data)
				out, err := cmd.CombinedOutput()
				if err != nil || len(out) > 0 {
					t.Errorf("groff -ww -man -z %s %s: %v\n%s", dev, name, err, out)
				}
			}
		}
	})
}

// The doc comment of a field becomes text about its key.
func TestManText(t *testing.T) {
	td := typeDoc{keys: map[string]string{"GreetDelay": "greet_delay", "SpoolDir": "spool_dir", "Size": "size", "HELO": "helo"}}
	cases := []struct{ doc, goName, want string }{
		{"GreetDelay is how long a new client\n// waits.", "GreetDelay", "How long a new client // waits."},
		{"Threshold: a score at or above it refuses.", "Threshold", "A score at or above it refuses."},
		{"Tag are the header lines.", "Tag", "The header lines."},
		{"MemoryLimit is held; the rest spills to SpoolDir, removed.", "MemoryLimit", "Held; the rest spills to spool_dir, removed."},
		{"Size is how many. Size stays.", "Size", "How many. Size stays."},
		{"ForwardDNS looks the HELO name up.", "ForwardDNS", "ForwardDNS looks the HELO name up."},
		{"HELO switches the HELO checks; see GreetDelay.", "HELO", "HELO switches the HELO checks; see greet_delay."},
		{"", "X", ""},
	}
	for _, c := range cases {
		if got := manText(c.doc, c.goName, td); got != c.want {
			t.Errorf("manText(%q) = %q, want %q", c.doc, got, c.want)
		}
	}
}

func TestRoff(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain", "plain"},
		{".starts with a dot", `\&.starts with a dot`},
		{"'quote", `\&'quote`},
		{`back\slash`, `back\eslash`},
		{"a-b", `a\-b`},
		{"≥ 1000 — µs", `\[u2265] 1000 \[u2014] \[u00B5]s`},
	}
	for _, c := range cases {
		if got := roff(c.in); got != c.want {
			t.Errorf("roff(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// Defaults are written as TOML values.
func TestTOMLValue(t *testing.T) {
	cases := []struct {
		v    any
		want string
	}{
		{"x", `"x"`},
		{[]string{}, `[]`},
		{[]string{"a", "b"}, `["a", "b"]`},
		{int64(8192), `8192`},
		{true, `true`},
		{map[string]string{}, `{}`},
		{map[string]string{"b": "2", "a": "1"}, `{ "a" = "1", "b" = "2" }`},
	}
	for _, c := range cases {
		got, err := tomlValue(reflect.ValueOf(c.v))
		if err != nil || got != c.want {
			t.Errorf("tomlValue(%#v) = %q, %v, want %q", c.v, got, err, c.want)
		}
	}
}

// What TestManual checks does fail: a key whose field lost its doc
// comment has no text, and a flag without a usage string is seen.
func TestManualCatchesUndocumented(t *testing.T) {
	root := t.TempDir()
	os.Mkdir(filepath.Join(root, "config"), 0o755)
	files, _ := filepath.Glob(filepath.Join(moduleRoot, "config", "*.go"))
	for _, f := range files {
		data := mustRead(t, f)
		lines := strings.Split(string(data), "\n")
		for i, l := range lines {
			if strings.Contains(l, "`toml:\"greet_delay\"`") { // drop the comment above
				for j := i - 1; j >= 0 && strings.HasPrefix(strings.TrimSpace(lines[j]), "//"); j-- {
					lines[j] = ""
				}
			}
		}
		os.WriteFile(filepath.Join(root, "config", filepath.Base(f)), []byte(strings.Join(lines, "\n")), 0o644)
	}
	tables, err := configTables(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		for _, k := range tb.keys {
			if (k.doc == "") != strings.HasSuffix(k.key, ".greet_delay") { // every key with that tag
				t.Errorf("%s: doc %q", k.key, k.doc)
			}
		}
	}

	saved := commands
	defer func() { commands = saved }()
	commands = append(commands[:len(commands):len(commands)], command{"undocumented", "", "a command", func(fs *flag.FlagSet) runner {
		fs.Bool("quiet", false, "")
		return nil
	}})
	cmds := manCommands()
	if f := cmds[len(cmds)-1].flags; len(f) != 1 || f[0].name != "quiet" || f[0].usage != "" {
		t.Errorf("flags %+v", f)
	}
}
