package metrics

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the table in README.md from the metric table")

const (
	tableStart = "<!-- metrics table: generated from metrics/table.go by `go test ./metrics -update` -->\n"
	tableEnd   = "<!-- end of metrics table -->\n"
)

// TestREADME: README.md documents every metric, and its table is the one
// generated from the definitions (go test ./metrics -update rewrites it).
func TestREADME(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	before, rest, ok1 := strings.Cut(doc, tableStart)
	_, after, ok2 := strings.Cut(rest, tableEnd)
	if !ok1 || !ok2 {
		t.Fatalf("README.md lacks the table markers %q ... %q", tableStart, tableEnd)
	}
	want := before + tableStart + Markdown() + tableEnd + after
	if *update {
		if err := os.WriteFile("README.md", []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		doc = want
	}
	if doc != want {
		t.Errorf("README.md's metrics table is stale: run go test ./metrics -update")
	}
	m := New("test")
	exercise(m)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if n := f.GetName(); strings.HasPrefix(n, "mxguard_") && !strings.Contains(doc, "`"+n+"`") {
			t.Errorf("README.md does not document %s", n)
		}
	}
}

// TestMainREADME: the project's README, which an admin reads first, has the
// same table.
func TestMainREADME(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), Markdown()) {
		t.Errorf("../README.md does not have the metric table of metrics/README.md (copy it under \"The admin listener\")")
	}
}
