package main

// The manual pages mxguard(8) and mxguard.toml(5) are generated from the
// code, so they cannot drift from it: the subcommands and their flags from
// the commands table, the configuration keys from config.Config's fields
// (names from the toml tags, defaults from config.Default(), text from the
// fields' doc comments, read from the source). TestManual writes them to
// dist/man/ with -update and fails when they are stale or when a flag or a
// key has no documentation.

import (
	"bytes"
	"encoding"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"unicode"

	"github.com/BurntSushi/toml"

	"github.com/mxguard/mxguard/config"
)

// regenerate is how the pages say they are made.
const regenerate = `go test ./cmd/mxguard -run TestManual -update`

// manFlag is one flag of a subcommand.
type manFlag struct {
	name, arg, usage, def string
}

// manCommand is one subcommand and its flags.
type manCommand struct {
	name, args, summary string
	flags               []manFlag
}

// manCommands reads the commands table.
func manCommands() []manCommand {
	var out []manCommand
	for i := range commands {
		c := &commands[i]
		fs, _ := c.newFlagSet(io.Discard)
		mc := manCommand{name: c.name, args: c.args, summary: c.summary}
		fs.VisitAll(func(f *flag.Flag) {
			arg, usage := flag.UnquoteUsage(f)
			if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool {
				arg = ""
			}
			def := f.DefValue
			if def == "false" || def == "0" || def == "0s" {
				def = ""
			}
			mc.flags = append(mc.flags, manFlag{name: f.Name, arg: arg, usage: usage, def: def})
		})
		out = append(out, mc)
	}
	return out
}

// configKey is one key of the configuration file.
type configKey struct {
	key string // dotted: "listen.greet_delay"
	def string // the default, as TOML
	doc string
}

// configTable is a table of the file ("" for the top level) and its keys.
type configTable struct {
	name  string
	array bool // [[name]]: an array of tables
	doc   string
	keys  []configKey
}

// machineDefaults are defaults that depend on the machine the page is
// generated on, said in words instead.
var machineDefaults = map[string]string{"hostname": "the machine's name"}

// configTables walks config.Config: every field with a toml tag is a key,
// a struct field is a table. root is the module's source tree, where the
// doc comments are read.
func configTables(root string) ([]configTable, error) {
	docs := docReader{root: root, pkgs: map[string]map[string]typeDoc{}}
	def := reflect.ValueOf(config.Default()).Elem()
	top := configTable{}
	var tables []configTable
	var walk func(t *configTable, v reflect.Value, prefix string) error
	walk = func(t *configTable, v reflect.Value, prefix string) error {
		td, err := docs.typeDoc(v.Type())
		if err != nil {
			return err
		}
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if f.Anonymous && name == "" && isTable(f.Type) {
				if err := walk(t, v.Field(i), prefix); err != nil {
					return err
				}
				continue
			}
			if name == "" {
				name = f.Name
			}
			fv := v.Field(i)
			switch {
			case isTable(f.Type):
				sub := configTable{name: prefix + name, doc: manText(td.types[f.Type.Name()], f.Type.Name(), td)}
				if d := td.fields[f.Name]; d != "" && sub.doc == "" {
					sub.doc = manText(d, f.Name, td)
				}
				if err := walk(&sub, fv, prefix+name+"."); err != nil {
					return err
				}
				tables = append(tables, sub)
			case (f.Type.Kind() == reflect.Slice || f.Type.Kind() == reflect.Array) && isTable(f.Type.Elem()):
				et := f.Type.Elem()
				sub := configTable{name: prefix + name, array: true, doc: manText(td.fields[f.Name], f.Name, td)}
				if sub.doc == "" {
					sub.doc = manText(td.types[et.Name()], et.Name(), td)
				}
				if err := walk(&sub, reflect.New(et).Elem(), prefix+name+"."); err != nil {
					return err
				}
				tables = append(tables, sub)
			default:
				key := prefix + name
				d, ok := machineDefaults[key]
				if !ok {
					if d, err = tomlValue(fv); err != nil {
						return fmt.Errorf("%s: default: %v", key, err)
					}
				}
				t.keys = append(t.keys, configKey{key: key, def: d, doc: manText(td.fields[f.Name], f.Name, td)})
			}
		}
		return nil
	}
	if err := walk(&top, def, ""); err != nil {
		return nil, err
	}
	return append([]configTable{top}, tables...), nil
}

var textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()

// isTable: a struct (or a pointer to one) that is not written as a string.
func isTable(t reflect.Type) bool {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct && !t.Implements(textMarshaler) && !reflect.PointerTo(t).Implements(textMarshaler)
}

// tomlValue writes v as a TOML value; maps inline.
func tomlValue(v reflect.Value) (string, error) {
	if v.Kind() == reflect.Map {
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		var parts []string
		for _, k := range keys {
			val, err := tomlValue(v.MapIndex(k))
			if err != nil {
				return "", err
			}
			parts = append(parts, fmt.Sprintf("%q = %s", fmt.Sprint(k), val))
		}
		if len(parts) == 0 {
			return "{}", nil
		}
		return "{ " + strings.Join(parts, ", ") + " }", nil
	}
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(map[string]any{"v": v.Interface()}); err != nil {
		return "", err
	}
	s := strings.TrimSpace(b.String())
	if !strings.HasPrefix(s, "v = ") {
		return "", fmt.Errorf("not a TOML value: %q", s)
	}
	return strings.TrimPrefix(s, "v = "), nil
}

// typeDoc is what the source says of one struct type: its doc, its
// fields' docs, and (for tables) the docs of the other types of its
// package.
type typeDoc struct {
	types  map[string]string // type name -> doc, of the whole package
	fields map[string]string // field name -> doc (or line comment)
	keys   map[string]string // field name -> toml key, to rewrite docs
}

// docReader reads doc comments from the module's source, a package at a
// time.
type docReader struct {
	root string
	pkgs map[string]map[string]typeDoc // package path -> type name -> doc
}

func (d *docReader) typeDoc(t reflect.Type) (typeDoc, error) {
	pkg, ok := d.pkgs[t.PkgPath()]
	if !ok {
		var err error
		if pkg, err = d.parse(t.PkgPath()); err != nil {
			return typeDoc{}, err
		}
		d.pkgs[t.PkgPath()] = pkg
	}
	td, ok := pkg[t.Name()]
	if !ok {
		return typeDoc{}, fmt.Errorf("type %s.%s not found in the source", t.PkgPath(), t.Name())
	}
	td.keys = map[string]string{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("toml"), ","); name != "" && name != "-" {
			td.keys[f.Name] = name
		}
	}
	return td, nil
}

// modulePath is the module's import path, found from config's.
var modulePath = strings.TrimSuffix(reflect.TypeFor[config.Config]().PkgPath(), "/config")

func (d *docReader) parse(pkgPath string) (map[string]typeDoc, error) {
	rel, ok := strings.CutPrefix(pkgPath, modulePath)
	if !ok {
		return nil, fmt.Errorf("package %s is outside the module", pkgPath)
	}
	dir := filepath.Join(d.root, filepath.FromSlash(strings.TrimPrefix(rel, "/")))
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	types := map[string]string{}
	out := map[string]typeDoc{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			return nil, err
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, spec := range gd.Specs {
				ts := spec.(*ast.TypeSpec)
				doc := ts.Doc.Text()
				if doc == "" && len(gd.Specs) == 1 {
					doc = gd.Doc.Text()
				}
				types[ts.Name.Name] = doc
				st, ok := ts.Type.(*ast.StructType)
				if !ok {
					continue
				}
				fields := map[string]string{}
				for _, fl := range st.Fields.List {
					doc := fl.Doc.Text()
					if doc == "" {
						doc = fl.Comment.Text()
					}
					for _, n := range fl.Names {
						fields[n.Name] = doc
					}
					if len(fl.Names) == 0 { // embedded
						if id, ok := fl.Type.(*ast.Ident); ok {
							fields[id.Name] = doc
						}
					}
				}
				out[ts.Name.Name] = typeDoc{fields: fields}
			}
		}
	}
	for name, td := range out {
		td.types = types
		out[name] = td
	}
	return out, nil
}

// manText turns a doc comment about the Go name into text about the key:
// "GreetDelay is how long ..." becomes "How long ...", and the names of
// the struct's other fields become their keys.
func manText(doc, goName string, td typeDoc) string {
	text := strings.Join(strings.Fields(doc), " ")
	if text == "" {
		return ""
	}
	for _, lead := range []string{goName + " is ", goName + " are ", goName + ": ", goName + ", "} {
		if rest, ok := strings.CutPrefix(text, lead); ok && rest != "" {
			r := []rune(rest)
			r[0] = unicode.ToUpper(r[0])
			text = string(r)
			break
		}
	}
	words := strings.Fields(text)
	for i, w := range words {
		core := strings.TrimRightFunc(w, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
		if key, ok := td.keys[core]; ok && isCamel(core) {
			words[i] = key + w[len(core):]
		}
	}
	return strings.Join(words, " ")
}

// isCamel: a Go name like SpoolDir, not a word like Size or an acronym
// like HELO.
func isCamel(s string) bool {
	inner, lower := false, false
	for i, r := range s {
		inner = inner || i > 0 && unicode.IsUpper(r)
		lower = lower || unicode.IsLower(r)
	}
	return inner && lower
}

// roff escapes text for a text line of a man page.
func roff(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case r > unicode.MaxASCII:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	out := b.String()
	if strings.HasPrefix(out, ".") || strings.HasPrefix(out, "'") {
		out = `\&` + out
	}
	return out
}

// header starts a page.
func header(w io.Writer, title, section, source string) {
	fmt.Fprintf(w, ".\\\" Generated from %s; do not edit.\n", source)
	fmt.Fprintf(w, ".\\\" Change the code, then regenerate: %s\n", regenerate)
	fmt.Fprintf(w, ".TH %s %s \"\" \"mxguard\" \"%s\"\n", strings.ToUpper(title), section,
		map[string]string{"5": "File Formats Manual", "8": "System Manager's Manual"}[section])
	// Keys, flags and list syntax are read letter by letter: no hyphenation,
	// and ragged lines rather than stretched ones around long words.
	fmt.Fprint(w, ".nh\n.ad l\n")
}

// manual8 renders mxguard(8).
func manual8(cmds []manCommand) []byte {
	var b bytes.Buffer
	header(&b, "mxguard", "8", "the commands table and flags in cmd/mxguard")
	b.WriteString(".SH NAME\nmxguard \\- anti\\-spam SMTP proxy for port 25\n.SH SYNOPSIS\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, ".B mxguard %s\n", c.name)
		if len(c.flags) > 0 {
			b.WriteString(".RI [ flags ]\n")
		}
		if c.args != "" {
			fmt.Fprintf(&b, ".I %s\n", roff(c.args))
		}
		b.WriteString(".br\n")
	}
	b.WriteString(manDescription)
	b.WriteString(".SH COMMANDS\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, ".SS %s\n%s.\n", c.name, roff(upperFirst(c.summary)))
		for _, f := range c.flags {
			tag := `\fB\-` + roff(f.name) + `\fR`
			if f.arg != "" {
				tag += ` \fI` + roff(f.arg) + `\fR`
			}
			fmt.Fprintf(&b, ".TP\n%s\n%s", tag, roff(upperFirst(f.usage)))
			if f.def != "" {
				fmt.Fprintf(&b, " (default: %s)", roff(f.def))
			}
			b.WriteString(".\n")
		}
	}
	b.WriteString(manSignals + manFiles + manExit + manSeeAlso8)
	return b.Bytes()
}

// manual5 renders mxguard.toml(5).
func manual5(tables []configTable) []byte {
	var b bytes.Buffer
	header(&b, "mxguard.toml", "5", "config.Config's fields, doc comments and defaults")
	b.WriteString(manConfigIntro)
	b.WriteString(".SH KEYS\n")
	for _, t := range tables {
		switch {
		case t.name == "":
			b.WriteString(".SS Top level\n")
		case t.array:
			fmt.Fprintf(&b, ".SS [[%s]]\n", roff(t.name))
		default:
			fmt.Fprintf(&b, ".SS [%s]\n", roff(t.name))
		}
		if t.doc != "" {
			fmt.Fprintf(&b, "%s\n", roff(t.doc))
		}
		for _, k := range t.keys {
			fmt.Fprintf(&b, ".TP\n\\fB%s\\fR = %s\n%s\n", roff(k.key), roff(k.def), roff(k.doc))
		}
	}
	b.WriteString(manConfigRest)
	return b.Bytes()
}

func upperFirst(s string) string {
	r := []rune(s)
	if len(r) > 0 {
		r[0] = unicode.ToUpper(r[0])
	}
	return string(r)
}

// manualPages are the generated pages by their names under dist/man/.
func manualPages(root string) (map[string][]byte, error) {
	tables, err := configTables(root)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		"mxguard.8":      manual8(manCommands()),
		"mxguard.toml.5": manual5(tables),
	}, nil
}

// The hand-written parts, in roff.

const manDescription = `.SH DESCRIPTION
.B mxguard
sits on port 25 in front of the MTA you already run (Postfix or Exim), refuses
the obvious junk early and cheaply, and relays every other session to that MTA
in lockstep \(em MAIL, each RCPT, DATA \(em so that the MTA's own replies reach
the client unchanged.
A client gets 250 for a message only after the backend accepted it.
.PP
It refuses clients that talk before the greeting, invalid and forged HELO
names, senders spoofing the local domains, clients on DNS block lists, and
mail failing SPF, DKIM or DMARC, and scores the rest, all as the rule files
say (see
.BR mxguard.toml (5)).
The backend learns the real client by XCLIENT or the PROXY protocol.
.PP
Every decision is written to the decision log, one JSON object per line;
.B mxguard log
reads it back.
.PP
Under systemd, with
.BR Type=notify ,
.B mxguard serve
reports READY=1 once it listens, RELOADING=1 and READY=1 around a reload
(STATUS= says whether it failed), and STOPPING=1 when it stops.
`

const manSignals = `.SH SIGNALS
.TP
.B SIGHUP
Re\-read the configuration file and the rule and list files it names, and
reopen the log file (for logrotate).
A configuration with an error is logged with its file and line, and the running
one stays in force.
New sessions get the new configuration; sessions in flight finish under the one
they started with.
Changes to listen.addresses and listen.proxy_protocol_from need a restart.
.TP
.BR SIGTERM ", " SIGINT
Stop accepting, let open sessions finish for up to limits.shutdown_timeout,
then exit.
`

const manFiles = `.SH FILES
.TP
.I /etc/mxguard/mxguard.toml
The configuration file; see
.BR mxguard.toml (5).
.TP
.I /etc/mxguard/rules.d/
Local rule and list files (rules = ["rules.d/*.toml"]).
.TP
.I /var/lib/mxguard/
State directory of the service.
.TP
.I /var/log/mxguard/
The decision log, mxguard.log, rotated by logrotate.
.TP
.I /lib/systemd/system/mxguard.service
The systemd unit.
`

const manExit = `.SH EXIT STATUS
.TP
.B 0
Success: serve stopped cleanly, the configuration is valid, the log was read.
.TP
.B 1
Failure: a configuration error (with its file and line), an address already
in use, sessions still open when limits.shutdown_timeout passed, an unreadable
log.
.TP
.B 2
Usage error: an unknown command or flag, a bad flag value.
.PP
.B mxguard test
exits 0 when the mail would be accepted or tagged, 4 for a temporary refusal,
5 for a permanent one.
`

const manSeeAlso8 = `.SH SEE ALSO
.BR mxguard.toml (5),
.BR postscreen (8),
.BR systemd.service (5),
.BR logrotate (8)
`

const manConfigIntro = `.SH NAME
mxguard.toml \- configuration file of mxguard
.SH SYNOPSIS
.I /etc/mxguard/mxguard.toml
.SH DESCRIPTION
The configuration of
.BR mxguard (8)
is a TOML file.
Durations are strings ("6s", "5m", "1h30m"), sizes are bytes.
A key that is not set has its default; a key that does not exist is an error.
Every error names the file and the line:
.PP
.RS
mxguard.toml:12: listen.greet_delay: bad duration "6x"
.RE
.PP
.B mxguard check\-config
validates a file and prints the effective configuration, defaults included.
SIGHUP applies changes to new sessions.
.PP
Below, each key is shown with its default.
`

const manConfigRest = `.SH RULES
What mxguard does with each outcome of its checks (pregreet, helo.*, dnsbl,
spf.fail, ...), the score thresholds, and the allow and deny lists live in
rule files, TOML too.
The built\-in rules are read first; the files named by
.B rules
are read after them in name order and override what they name.
.B mxguard check\-config
checks them all.
.SH EXAMPLE
.nf
hostname = "mx.example.com"
local_domains = ["example.com"]
rules = ["rules.d/*.toml"]

[listen]
addresses = ["0.0.0.0:25", "[::]:25"]

[backend]
address = "127.0.0.1:10025"
client_identity = "xclient"

[log]
path = "/var/log/mxguard/mxguard.log"
.fi
.SH FILES
.TP
.I /etc/mxguard/mxguard.toml
The configuration file.
.TP
.I /etc/mxguard/rules.d/
Local rule files.
.SH SEE ALSO
.BR mxguard (8)
`
