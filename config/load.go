package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Error is a configuration problem at a place in a file.
type Error struct {
	File string
	Line int // 0 when the problem is not on one line (a missing key)
	Msg  string
}

func (e *Error) Error() string {
	file := e.File
	if file == "" {
		file = "(built-in config)"
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", file, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", file, e.Msg)
}

// Source remembers where keys are in one file, so errors found after
// decoding (by this package or by the packages built from it) can name
// their line.
type Source struct {
	Path  string
	lines keyLines
}

// Errorf returns an *Error placed at the line of key (a dotted path given as
// parts: "decision", "outcomes", "helo.bare_ip", "reply").
func (s *Source) Errorf(key []string, format string, args ...any) error {
	e := &Error{File: s.Path, Msg: fmt.Sprintf(format, args...)}
	if s.lines != nil {
		e.Line = s.lines.line(key)
	}
	return e
}

// Line returns the line key is set on, or 0.
func (s *Source) Line(key ...string) int { return s.lines.line(key) }

// DecodeFile decodes TOML data into v (which holds the defaults). A syntax
// or type error is fatal; unknown keys are listed, one error each.
func DecodeFile(path string, data []byte, v any) (src *Source, fatal error, unknown []error) {
	src = &Source{Path: path, lines: scanKeys(string(data))}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(v)
	if err != nil {
		return src, decodeError(path, err), nil
	}
	for _, k := range md.Undecoded() {
		unknown = append(unknown, src.Errorf(k, "unknown key %q", k.String()))
	}
	return src, nil, unknown
}

// Errorf returns an *Error placed at the line of key in the config file.
func (c *Config) Errorf(key []string, format string, args ...any) error {
	if c.src == nil {
		return (&Source{Path: c.Path}).Errorf(key, format, args...)
	}
	return c.src.Errorf(key, format, args...)
}

// Load reads and validates the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse decodes and validates TOML data; path is used in error messages.
func Parse(path string, data []byte) (*Config, error) {
	c := Default()
	c.Path = path
	src, fatal, errs := DecodeFile(path, data, c)
	c.src = src
	if fatal != nil {
		return nil, fatal
	}
	errs = append(errs, c.validate()...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

var lineInMsg = regexp.MustCompile(`^toml: line (\d+)(?: \(last key "?([^")]*)"?\))?: `)

// decodeError turns the toml library's error into file:line: message.
func decodeError(path string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.LastKey != "" {
			msg = fmt.Sprintf("%s: %s", pe.LastKey, msg)
		}
		return &Error{File: path, Line: pe.Position.Line, Msg: msg}
	}
	s := err.Error()
	if m := lineInMsg.FindStringSubmatch(s); m != nil {
		n, _ := strconv.Atoi(m[1])
		msg := s[len(m[0]):]
		if m[2] != "" {
			msg = m[2] + ": " + msg
		}
		return &Error{File: path, Line: n, Msg: msg}
	}
	return &Error{File: path, Msg: strings.TrimPrefix(s, "toml: ")}
}

func (c *Config) validate() []error {
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, c.Errorf(strings.Split(key, "."), format, args...))
	}

	c.Hostname = strings.TrimSuffix(strings.ToLower(c.Hostname), ".")
	if c.Hostname == "" {
		bad("hostname", "hostname is required")
	} else if !validDomain(c.Hostname) {
		bad("hostname", "hostname %q is not a valid host name", c.Hostname)
	}
	for i, d := range c.LocalDomains {
		d = strings.TrimSuffix(strings.ToLower(d), ".")
		if !validDomain(d) {
			bad("local_domains", "local_domains: %q is not a valid domain", d)
		}
		c.LocalDomains[i] = d
	}
	for i, a := range c.OwnIPs {
		c.OwnIPs[i] = a.Unmap()
	}

	if len(c.Listen.Addresses) == 0 {
		bad("listen.addresses", "listen.addresses: at least one address is required")
	}
	for _, a := range c.Listen.Addresses {
		if _, _, err := net.SplitHostPort(a); err != nil {
			bad("listen.addresses", "listen.addresses: %q is not host:port", a)
		}
	}

	l := &c.Limits
	positive := map[string]int64{
		"limits.max_connections":         int64(l.MaxConnections),
		"limits.max_connections_per_ip":  int64(l.MaxConnectionsPerIP),
		"limits.max_connections_per_net": int64(l.MaxConnectionsPerNet),
		"limits.max_recipients":          int64(l.MaxRecipients),
		"limits.max_message_size":        l.MaxMessageSize,
		"limits.command_timeout":         int64(l.CommandTimeout),
		"limits.data_timeout":            int64(l.DataTimeout),
		"limits.write_timeout":           int64(l.WriteTimeout),
		"limits.session_timeout":         int64(l.SessionTimeout),
		"limits.shutdown_timeout":        int64(l.ShutdownTimeout),
		"backend.dial_timeout":           int64(c.Backend.DialTimeout),
		"backend.command_timeout":        int64(c.Backend.CommandTimeout),
		"backend.data_timeout":           int64(c.Backend.DataTimeout),
		"dns.timeout":                    int64(c.DNS.Timeout),
		"dns.attempts":                   int64(c.DNS.Attempts),
	}
	for _, k := range sortedKeys(positive) {
		if positive[k] <= 0 {
			bad(k, "%s must be greater than zero", k)
		}
	}
	if l.MaxLineLength < 1000 {
		bad("limits.max_line_length", "limits.max_line_length must be at least 1000 (RFC 5321 §4.5.3.1.6)")
	}
	nonNegative := map[string]int64{"limits.connection_rate_per_ip": int64(l.ConnectionRatePerIP),
		"limits.junk_command_limit": int64(l.JunkCommandLimit), "limits.hard_error_limit": int64(l.HardErrorLimit),
		"limits.unknown_command_limit": int64(l.UnknownCommandLimit), "stress.junk_command_limit": int64(c.Stress.JunkCommandLimit),
		"stress.hard_error_limit": int64(c.Stress.HardErrorLimit), "stress.unknown_command_limit": int64(c.Stress.UnknownCommandLimit),
		"backend.prepared_connections": int64(c.Backend.PreparedConnections)}
	for _, k := range sortedKeys(nonNegative) {
		if nonNegative[k] < 0 {
			bad(k, "%s must not be negative", k)
		}
	}
	if c.Stress.Threshold < 1 || c.Stress.Threshold > 100 {
		bad("stress.threshold", "stress.threshold must be a percentage of limits.max_connections, 1 to 100")
	}
	if c.Stress.CommandTimeout <= 0 {
		bad("stress.command_timeout", "stress.command_timeout must be greater than zero")
	}
	if l.MaxConnectionsPerNet < l.MaxConnectionsPerIP {
		bad("limits.max_connections_per_net", "limits.max_connections_per_net (%d) is below limits.max_connections_per_ip (%d)", l.MaxConnectionsPerNet, l.MaxConnectionsPerIP)
	}
	if l.MaxConnectionsPerIP > l.MaxConnections {
		bad("limits.max_connections_per_ip", "limits.max_connections_per_ip (%d) is above limits.max_connections (%d)", l.MaxConnectionsPerIP, l.MaxConnections)
	}

	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "tls: cert_file and key_file go together")
	} else if c.TLS.CertFile != "" {
		if _, err := c.TLS.Certificate(); err != nil {
			bad("tls.cert_file", "tls: %v", err)
		}
	}

	if _, _, err := net.SplitHostPort(c.Backend.Address); err != nil {
		bad("backend.address", "backend.address %q is not host:port", c.Backend.Address)
	}

	for i, r := range c.DNS.Resolvers {
		if a, err := netip.ParseAddr(r); err == nil {
			c.DNS.Resolvers[i] = netip.AddrPortFrom(a, 53).String()
		} else if _, err := netip.ParseAddrPort(r); err != nil {
			bad("dns.resolvers", "dns.resolvers: %q is not an IP address or ip:port", r)
		}
	}
	if c.DNS.CacheSize < 0 {
		bad("dns.cache_size", "dns.cache_size must not be negative")
	}
	if c.DNS.MinTTL > c.DNS.MaxTTL {
		bad("dns.min_ttl", "dns.min_ttl (%s) is above dns.max_ttl (%s)", c.DNS.MinTTL.D(), c.DNS.MaxTTL.D())
	}

	if c.DNSBL.AllowlistThreshold > 0 {
		bad("dnsbl.allowlist_threshold", "dnsbl.allowlist_threshold must be negative (0 turns it off)")
	}
	if c.DNSBL.Threshold <= 0 {
		bad("dnsbl.threshold", "dnsbl.threshold must be greater than zero")
	}
	if c.DMARC.Enabled && (!c.SPF.Enabled || !c.DKIM.Enabled) {
		bad("dmarc.enabled", "dmarc needs spf and dkim enabled")
	}
	for i, h := range c.Headers.Tag {
		name, value, ok := strings.Cut(h, ":")
		if !ok || !headerName(name) || strings.ContainsAny(value, "\r\n\x00") {
			bad("headers.tag", "headers.tag[%d] %q is not a header line (Name: value)", i, h)
		}
	}
	if h := c.Headers.ScoreHeader; h != "" && !headerName(h) {
		bad("headers.score_header", "headers.score_header %q is not a header name", h)
	}
	if c.Message.SpoolDir != "" {
		if fi, err := os.Stat(c.Message.SpoolDir); err != nil || !fi.IsDir() {
			bad("message.spool_dir", "message.spool_dir %q is not a directory", c.Message.SpoolDir)
		}
	}
	if a := c.Admin.Listen; a != "" {
		host, _, err := net.SplitHostPort(a)
		ip, perr := netip.ParseAddr(host)
		switch {
		case err != nil:
			bad("admin.listen", "admin.listen %q is not host:port", a)
		case !c.Admin.AllowRemote && (host == "" || (perr == nil && !ip.IsLoopback()) || (perr != nil && host != "localhost")):
			bad("admin.listen", "admin.listen %q is not a loopback address (set admin.allow_remote, and admin.auth_file)", a)
		}
	}
	if c.Admin.RecentSessions < 1 {
		bad("admin.recent_sessions", "admin.recent_sessions must be at least 1")
	}
	st := &c.State
	switch {
	case st.Store == StoreBolt && st.File == "":
		bad("state.file", "state.file is empty: the bolt store needs a file")
	case st.Store == StoreRedis:
		if _, _, err := net.SplitHostPort(st.RedisAddress); err != nil {
			bad("state.redis_address", "state.redis_address %q is not host:port", st.RedisAddress)
		}
	}
	if st.ReadTimeout <= 0 {
		bad("state.read_timeout", "state.read_timeout must be greater than zero")
	}
	g := &c.Greylist
	if g.Enabled && (g.Delay <= 0 || g.RetryWindow <= g.Delay || g.MaxAge <= 0) {
		bad("greylist.delay", "greylist: want delay > 0, retry_window > delay and max_age > 0")
	}
	if g.IPv4Mask < 8 || g.IPv4Mask > 32 {
		bad("greylist.ipv4_mask", "greylist.ipv4_mask must be 8 to 32")
	}
	if g.IPv6Mask < 16 || g.IPv6Mask > 128 {
		bad("greylist.ipv6_mask", "greylist.ipv6_mask must be 16 to 128")
	}
	if c.Reputation.HalfLife <= 0 || c.Reputation.Retention <= 0 {
		bad("reputation.half_life", "reputation.half_life and reputation.retention must be greater than zero")
	}
	if c.Log.Path == "" {
		bad("log.path", "log.path is empty (use \"-\" for standard output)")
	}
	return errs
}

// validDomain reports whether s is a syntactically valid DNS name (letters,
// digits, hyphens; labels of 1-63; 253 in all). Underscores are refused:
// host names do not have them.
func validDomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
				return false
			}
		}
	}
	return true
}

// headerName reports an RFC 5322 field name: printable ASCII but ':'.
func headerName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == ':' {
			return false
		}
	}
	return true
}
