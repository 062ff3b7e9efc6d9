package config

import (
	"fmt"
	"strings"
)

// keyLines maps each key path in a TOML source to the line it is first set
// on. BurntSushi/toml keeps key positions private, so unknown keys and
// validation errors find their line through this small scanner instead. It
// understands tables, arrays of tables, dotted and quoted keys, inline tables,
// multi-line arrays and strings: enough to point an admin at the right line.
type keyLines map[string]int

const keySep = "\x1f"

func pathKey(key []string) string { return strings.Join(key, keySep) }

func scanKeys(src string) keyLines {
	kl := keyLines{}
	counts := map[string]int{} // [[array]] tables seen so far
	var table []string
	depth := 0  // open [ or { of a multi-line value
	multi := "" // the closing quote of a multi-line string we are in
	for i, line := range strings.Split(src, "\n") {
		n := i + 1
		s := strings.TrimSpace(line)
		if multi != "" {
			if strings.Count(s, multi)%2 == 1 {
				multi = ""
			}
			continue
		}
		if depth > 0 {
			depth += bracketDelta(s)
			continue
		}
		if s == "" || s[0] == '#' {
			continue
		}
		if s[0] == '[' {
			array := strings.HasPrefix(s, "[[")
			inner := strings.TrimPrefix(s, "[")
			inner = strings.TrimPrefix(inner, "[")
			if end := strings.IndexByte(inner, ']'); end >= 0 {
				inner = inner[:end]
			}
			table, _ = parseKey(inner)
			kl.set(table, n)
			if array {
				// The i-th [[x]] is also "x", "[i]" so errors about one
				// element of the array find its own lines.
				k := pathKey(table)
				table = append(table, fmt.Sprintf("[%d]", counts[k]))
				counts[k]++
				kl.set(table, n)
			}
			continue
		}
		key, rest := parseKey(s)
		if len(key) == 0 {
			continue
		}
		full := append(append([]string{}, table...), key...)
		kl.set(full, n)
		if plain := withoutIndex(full); len(plain) != len(full) {
			kl.set(plain, n) // undecoded keys come without the index
		}
		rest = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), "="))
		switch {
		case strings.HasPrefix(rest, `"""`) || strings.HasPrefix(rest, `'''`):
			q := rest[:3]
			if strings.Count(rest, q)%2 == 1 {
				multi = q
			}
		case strings.HasPrefix(rest, "{"):
			kl.inline(full, rest, n)
			depth = bracketDelta(rest)
		case strings.HasPrefix(rest, "["):
			depth = bracketDelta(rest)
		}
	}
	return kl
}

func withoutIndex(key []string) []string {
	out := make([]string, 0, len(key))
	for _, k := range key {
		if !strings.HasPrefix(k, "[") {
			out = append(out, k)
		}
	}
	return out
}

func (kl keyLines) set(key []string, line int) {
	k := pathKey(key)
	if _, ok := kl[k]; !ok {
		kl[k] = line
	}
}

// inline records the keys of a one-line inline table: x = { a = 1, b = 2 }.
func (kl keyLines) inline(prefix []string, s string, line int) {
	s = strings.TrimPrefix(s, "{")
	for _, part := range strings.Split(s, ",") {
		key, rest := parseKey(strings.TrimSpace(part))
		if len(key) > 0 && strings.HasPrefix(strings.TrimSpace(rest), "=") {
			kl.set(append(append([]string{}, prefix...), key...), line)
		}
	}
}

// line returns the line of key, or of its closest enclosing key that has
// one, or 0.
func (kl keyLines) line(key []string) int {
	for n := len(key); n > 0; n-- {
		if l, ok := kl[pathKey(key[:n])]; ok {
			return l
		}
	}
	return 0
}

// parseKey reads a (dotted, possibly quoted) key at the start of s and
// returns its parts and what follows.
func parseKey(s string) ([]string, string) {
	var parts []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return parts, s
		}
		switch s[0] {
		case '"', '\'':
			end := strings.IndexByte(s[1:], s[0])
			if end < 0 {
				return parts, s
			}
			parts = append(parts, s[1:1+end])
			s = s[2+end:]
		default:
			end := 0
			for end < len(s) && isBareKeyChar(s[end]) {
				end++
			}
			if end == 0 {
				return parts, s
			}
			parts = append(parts, s[:end])
			s = s[end:]
		}
		s = strings.TrimLeft(s, " \t")
		if !strings.HasPrefix(s, ".") {
			return parts, s
		}
		s = s[1:]
	}
}

func isBareKeyChar(c byte) bool {
	return c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// bracketDelta counts opening minus closing brackets and braces outside
// strings and comments.
func bracketDelta(s string) int {
	d := 0
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#':
			return d
		case c == '[' || c == '{':
			d++
		case c == ']' || c == '}':
			d--
		}
	}
	return d
}
