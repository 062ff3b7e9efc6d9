package rules

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
)

// List is an allow or deny list of one kind of thing: client addresses,
// reverse DNS names, HELO names, senders or recipients.
type List struct {
	Name   string
	Type   string // client, rdns, helo, sender, recipient
	Allow  bool
	Action Action               // for deny lists: Reject, Tempfail or Drop
	Skip   map[checks.Name]bool // for allow lists: the checks skipped; nil = all
	Reply  Reply
	Stage  Stage
	Log    bool
	Where  string // file:line of the [[list]]

	prefixes []netip.Prefix
	exact    map[string]bool
	suffixes []string // ".example.com"
	locals   []string // "postmaster@" (recipient and sender lists)
	regexps  []*regexp.Regexp
}

// ListTypes are the kinds of thing a [[list]] may hold.
var ListTypes = []string{"client", "rdns", "helo", "sender", "recipient"}

func (b *builder) list(path string, src *config.Source, i int, s listSpec) (*List, []error) {
	key := []string{"list", fmt.Sprintf("[%d]", i)}
	var errs []error
	bad := func(k string, format string, args ...any) {
		errs = append(errs, src.Errorf(append(key, k), format, args...))
	}
	l := &List{Name: s.Name, Type: s.Type, Where: fmt.Sprintf("%s:%d", path, src.Line(key...)), exact: map[string]bool{}}
	if !validName(s.Name) {
		bad("name", "list name %q: use letters, digits, '-' and '_'", s.Name)
	} else if prev, ok := b.lists[s.Name]; ok {
		bad("name", "list %q is already defined at %s", s.Name, prev)
	} else {
		b.lists[s.Name] = l.Where
	}
	if !contains(ListTypes, s.Type) {
		bad("type", "list type %q: want one of %s", s.Type, strings.Join(ListTypes, ", "))
	}
	switch s.Action {
	case "allow":
		l.Allow = true
		if s.Reply != "" {
			bad("reply", "an allow list gives no reply")
		}
		for _, c := range s.Skip {
			if c == "greeting" {
				c = string(checks.PregreetName)
			}
			if c == "all" {
				l.Skip = nil
				break
			}
			if !slices.Contains(b.known.Checks, checks.Name(c)) {
				bad("skip", "unknown check %q in skip: want %s or all", c, joinNames(b.known.Checks))
				continue
			}
			if l.Skip == nil {
				l.Skip = map[checks.Name]bool{}
			}
			l.Skip[checks.Name(c)] = true
		}
	case "deny", "reject", "enforce", "tempfail", "drop":
		l.Action = Reject
		switch s.Action {
		case "tempfail":
			l.Action = Tempfail
		case "drop":
			l.Action = Drop
		}
		if len(s.Skip) > 0 {
			bad("skip", "a deny list skips nothing")
		}
		reply, err := replyFor(l.Action, mustReply("550 5.7.1 Access denied"), s.Reply)
		if err != nil {
			bad("reply", "%v", err)
		}
		l.Reply = reply
	default:
		bad("action", "list action %q: want allow, deny (or reject), tempfail or drop", s.Action)
	}
	if s.Stage != "" {
		st, err := parseStage(s.Stage)
		if err != nil {
			bad("stage", "%v", err)
		}
		l.Stage = st
	}
	if s.Mode != "" {
		log, err := parseMode(s.Mode)
		if err != nil {
			bad("mode", "%v", err)
		}
		l.Log = log
	}
	for _, e := range s.Entries {
		if err := l.addEntry(e); err != nil {
			bad("entries", "list %q: %v", s.Name, err)
		}
	}
	for _, f := range s.Files {
		if !filepath.IsAbs(f) {
			f = filepath.Join(filepath.Dir(path), f)
		}
		errs = append(errs, l.addFile(f)...)
	}
	if len(s.Entries) == 0 && len(s.Files) == 0 {
		bad("entries", "list %q has no entries and no files", s.Name)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return l, nil
}

// addFile reads entries one a line; '#' starts a comment. Errors name the
// list file's own line.
func (l *List) addFile(path string) []error {
	data, err := os.ReadFile(path)
	if err != nil {
		return []error{&config.Error{File: l.Where, Msg: fmt.Sprintf("list %q: %v", l.Name, err)}}
	}
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if err := l.addEntry(line); err != nil {
			errs = append(errs, &config.Error{File: path, Line: n, Msg: fmt.Sprintf("list %q: %v", l.Name, err)})
		}
	}
	return errs
}

func (l *List) addEntry(e string) error {
	e = strings.TrimSpace(e)
	if e == "" {
		return fmt.Errorf("empty entry")
	}
	if len(e) > 1 && e[0] == '/' && e[len(e)-1] == '/' {
		re, err := regexp.Compile("(?i)" + e[1:len(e)-1])
		if err != nil {
			return fmt.Errorf("bad regexp %s: %v", e, err)
		}
		l.regexps = append(l.regexps, re)
		return nil
	}
	switch l.Type {
	case "client":
		var p config.Prefix
		if err := p.UnmarshalText([]byte(e)); err != nil {
			return err
		}
		l.prefixes = append(l.prefixes, p.Prefix)
	case "rdns", "helo":
		e = strings.ToLower(strings.TrimSuffix(e, "."))
		if strings.HasPrefix(e, ".") {
			l.suffixes = append(l.suffixes, e)
		} else {
			l.exact[e] = true
		}
	case "sender", "recipient":
		e = strings.ToLower(e)
		switch {
		case e == "<>":
			l.exact[""] = true
		case strings.HasSuffix(e, "@"):
			l.locals = append(l.locals, e)
		case strings.HasPrefix(e, "."):
			l.suffixes = append(l.suffixes, e)
		case strings.HasPrefix(e, "@"):
			l.exact[e[1:]] = true // a domain
		default:
			l.exact[e] = true // an address, or a domain
		}
	}
	return nil
}

// MatchIP reports whether a client address is on a client list.
func (l *List) MatchIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range l.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return len(l.regexps) > 0 && l.matchRegexp(ip.String())
}

// MatchName reports whether a HELO or reverse DNS name is on the list.
func (l *List) MatchName(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == "" {
		return false
	}
	if l.exact[name] {
		return true
	}
	for _, s := range l.suffixes {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return l.matchRegexp(name)
}

// MatchAddress reports whether a sender or recipient is on the list: by
// address, domain, parent domain (".example.com"), local part ("postmaster@")
// or regexp. "<>" is the null sender.
func (l *List) MatchAddress(addr string) bool {
	addr = strings.ToLower(addr)
	if l.exact[addr] {
		return true
	}
	if addr == "" {
		return false
	}
	at := strings.LastIndexByte(addr, '@')
	if at >= 0 {
		domain := strings.TrimSuffix(addr[at+1:], ".")
		if l.exact[domain] {
			return true
		}
		for _, s := range l.suffixes {
			if strings.HasSuffix(domain, s) {
				return true
			}
		}
		for _, lp := range l.locals {
			if strings.HasPrefix(addr, lp) && len(lp) == at+1 {
				return true
			}
		}
	}
	return l.matchRegexp(addr)
}

func (l *List) matchRegexp(s string) bool {
	for _, re := range l.regexps {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

// Facts are what lists can match on; what is not known yet is empty.
type Facts struct {
	Client netip.Addr
	RDNS   string
	HELO   []string
	From   *string // nil before MAIL; "" is the null sender
	Rcpt   string  // the recipient being decided on, if any
}

// MatchLists returns the lists that match, in policy order.
func (p *Policy) MatchLists(f Facts) []*List {
	var out []*List
	for _, l := range p.lists {
		if l.matches(f) {
			out = append(out, l)
		}
	}
	return out
}

func (l *List) matches(f Facts) bool {
	switch l.Type {
	case "client":
		return f.Client.IsValid() && l.MatchIP(f.Client)
	case "rdns":
		return l.MatchName(f.RDNS)
	case "helo":
		for _, h := range f.HELO {
			if l.MatchName(h) {
				return true
			}
		}
	case "sender":
		return f.From != nil && l.MatchAddress(*f.From)
	case "recipient":
		return f.Rcpt != "" && l.MatchAddress(f.Rcpt)
	}
	return false
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c == '-' || c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func joinNames(names []checks.Name) string {
	s := make([]string, len(names))
	for i, n := range names {
		s[i] = string(n)
	}
	return strings.Join(s, ", ")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
