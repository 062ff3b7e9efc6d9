// Package config is mxguard's configuration: the TOML schema, its defaults and
// its validation. It is plain data; the other packages are built from it.
//
// Errors name the file and line ("mxguard.toml:12: ..."), unknown keys are
// errors, durations are strings ("6s") and sizes are bytes.
package config

import (
	"crypto/tls"
	"net/netip"
	"os"
	"time"
)

// DefaultPath is where `mxguard serve` looks without -config.
const DefaultPath = "/etc/mxguard/mxguard.toml"

// DefaultStateFile is the embedded state store, in the state directory
// (systemd's StateDirectory=mxguard).
const DefaultStateFile = "/var/lib/mxguard/state.db"

// Config is the whole configuration file.
type Config struct {
	// Hostname is our name: in the banner, in Received headers, and the name a
	// client's HELO must not claim.
	Hostname string `toml:"hostname"`
	// LocalDomains are the domains we receive mail for. A HELO claiming one
	// of them, or a MAIL FROM in one of them from an outside host, is forged.
	LocalDomains []string `toml:"local_domains"`
	// TrustedNetworks skip the greeting delay and every check.
	TrustedNetworks []Prefix `toml:"trusted_networks"`
	// OwnIPs are our addresses, in addition to those of the listeners and the
	// machine's interfaces, which are found by themselves.
	OwnIPs []netip.Addr `toml:"own_ips"`

	Listen     Listen     `toml:"listen"`
	Limits     Limits     `toml:"limits"`
	Stress     Stress     `toml:"stress"`
	Tests      Tests      `toml:"tests"`
	TLS        TLS        `toml:"tls"`
	Backend    Backend    `toml:"backend"`
	DNS        DNS        `toml:"dns"`
	HELO       HELO       `toml:"helo"`
	DNSBL      DNSBL      `toml:"dnsbl"`
	SPF        SPF        `toml:"spf"`
	DKIM       DKIM       `toml:"dkim"`
	DMARC      DMARC      `toml:"dmarc"`
	Headers    Headers    `toml:"headers"`
	Message    Message    `toml:"message"`
	Reputation Reputation `toml:"reputation"`
	State      State      `toml:"state"`
	Greylist   Greylist   `toml:"greylist"`
	RateLimit  RateLimit  `toml:"ratelimit"`
	Log        Log        `toml:"log"`
	Admin      Admin      `toml:"admin"`

	// Rules are rule files or globs ("/etc/mxguard/rules.d/*.toml"), read in
	// name order after the built-in rules, which they override.
	Rules []string `toml:"rules"`

	// Path is the file this configuration was read from ("" for built-in).
	Path string `toml:"-"`

	src *Source // where keys are in the file, for errors
}

// Listen is where and how clients are greeted.
type Listen struct {
	// Where to listen, "host:port" ("[::]:25", "0.0.0.0:25", ":25"). Restart to change.
	Addresses []string `toml:"addresses"`
	// GreetDelay is how long a new client waits for the banner; talking
	// before it is complete is the early-talker (pregreet) test.
	GreetDelay Duration `toml:"greet_delay"`
	// BaitBanner sends "220-<hostname> ESMTP" before the wait, as postscreen
	// does: bots that do not read multi-line replies talk into it.
	BaitBanner bool `toml:"bait_banner"`
	// ProxyProtocolFrom are load balancers in front of mxguard: a
	// connection from one of them must start with a PROXY v1/v2 header
	// naming the real client; from anywhere else a header is not read.
	// Restart to change.
	ProxyProtocolFrom []Prefix `toml:"proxy_protocol_from"`
	// ProxyProtocolTimeout bounds the wait for that header.
	ProxyProtocolTimeout Duration `toml:"proxy_protocol_timeout"`
	// ProxyProtocolUnknown is what becomes of a connection whose PROXY
	// header names no client (v1 UNKNOWN, v2 LOCAL): "untrusted" (a client
	// of unknown address: every check that can runs, none that needs the
	// address passes it) or "refuse" (421 and hang up). Either is logged.
	ProxyProtocolUnknown UnknownPolicy `toml:"proxy_protocol_unknown"`
}

// Limits bound what one client, or all of them, can take.
type Limits struct {
	// Open connections in all. When they are all taken, the connection
	// that costs most and has done least (idle before MAIL, longest silent
	// first) is shed with 421 to make room; only when none can be shed does
	// a new client get 421 4.7.0. Sized from the memory an idle connection
	// takes (docs/reliability.md).
	MaxConnections int `toml:"max_connections"`
	// Open connections from one address; past it 421 4.7.0.
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`
	// Open connections from one network: a /24 for IPv4, a /64 for IPv6;
	// past it 421 4.7.0.
	MaxConnectionsPerNet int `toml:"max_connections_per_net"`
	// New connections one address may open per minute (Postfix anvil's
	// smtpd_client_connection_rate_limit); past it 421 4.7.0. 0: no limit.
	ConnectionRatePerIP int `toml:"connection_rate_per_ip"`
	// Junk commands (NOOP, RSET, VRFY, EXPN, HELP) a client may send before
	// each further one counts as an error (smtpd_junk_command_limit).
	JunkCommandLimit int `toml:"junk_command_limit"`
	// Error replies a client may earn before it is cut off with 421
	// (smtpd_hard_error_limit).
	HardErrorLimit int `toml:"hard_error_limit"`
	// Unknown commands a client may send before it is cut off with 421.
	UnknownCommandLimit int `toml:"unknown_command_limit"`
	// NULBytes is what a NUL byte in a command line or a message gets:
	// "refuse" (a clear 500 or 550 reply) or "remove" (the NULs are
	// dropped and the rest goes on). Either way it is logged; a backend
	// that drops NULs before looking for the end of data must never see one.
	NULBytes NULPolicy `toml:"nul_bytes"`
	// Recipients per message; past it 452 4.5.3.
	MaxRecipients int `toml:"max_recipients"`
	// MaxMessageSize is advertised as SIZE and enforced; keep it at or below
	// the backend's own limit (Postfix message_size_limit).
	MaxMessageSize int64 `toml:"max_message_size"`
	// MaxLineLength bounds command and message lines alike (go-smtp applies
	// one limit to both), so it is generous.
	MaxLineLength int `toml:"max_line_length"`
	// CommandTimeout is how long we wait for each command line.
	CommandTimeout Duration `toml:"command_timeout"`
	// DataTimeout is how long the whole message may take to arrive.
	DataTimeout Duration `toml:"data_timeout"`
	// Each reply must be taken by the client within this.
	WriteTimeout Duration `toml:"write_timeout"`
	// SessionTimeout bounds a connection's whole life, whatever it does.
	SessionTimeout Duration `toml:"session_timeout"`
	// ShutdownTimeout is how long SIGTERM waits for open sessions.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
}

// Stress is what mxguard does when many connections are open (Postfix's
// stress mode): it shortens the waits and tolerates fewer errors, so that
// connections that do nothing give their slots back sooner.
type Stress struct {
	// Threshold is the share of limits.max_connections, in percent, open
	// at which stress mode begins. It ends when fewer than nine tenths of
	// that are open, after min_duration.
	Threshold int `toml:"threshold"`
	// MinDuration is the shortest stress episode: the load must stay low
	// this long before the normal values return.
	MinDuration Duration `toml:"min_duration"`
	// GreetDelay replaces listen.greet_delay under stress.
	GreetDelay Duration `toml:"greet_delay"`
	// CommandTimeout replaces limits.command_timeout under stress.
	CommandTimeout Duration `toml:"command_timeout"`
	// JunkCommandLimit replaces limits.junk_command_limit under stress.
	JunkCommandLimit int `toml:"junk_command_limit"`
	// HardErrorLimit replaces limits.hard_error_limit under stress.
	HardErrorLimit int `toml:"hard_error_limit"`
	// UnknownCommandLimit replaces limits.unknown_command_limit under stress.
	UnknownCommandLimit int `toml:"unknown_command_limit"`
}

// Tests are postscreen's after-greeting tests: they judge how a client
// speaks SMTP. A client that passes one is not tested again for pass_ttl; one
// that fails any loses every pass it had.
type Tests struct {
	// NonSMTP refuses a command line of another protocol (HTTP, POP3, a
	// header line): outcome non_smtp.
	NonSMTP bool `toml:"non_smtp"`
	// Pipelining stops offering PIPELINING and reports a client that sends
	// commands before the reply to the one before (outcome pipelining).
	Pipelining bool `toml:"pipelining"`
	// BareNewline reports a command line that ends in LF alone, without
	// CR (outcome bare_newline).
	BareNewline bool `toml:"bare_newline"`
	// PassTTL is how long a pass of these tests is remembered
	// (postscreen's *_ttl: 30 days).
	PassTTL Duration `toml:"pass_ttl"`
}

// TLS offers STARTTLS to clients when a certificate is configured.
type TLS struct {
	// CertFile is the certificate chain (PEM) offered with STARTTLS;
	// empty: no STARTTLS.
	CertFile string `toml:"cert_file"`
	// KeyFile is the private key of cert_file (PEM).
	KeyFile string `toml:"key_file"`

	cert    *tls.Certificate // loaded once: at validation, or at first use
	certErr error
}

// Certificate returns the certificate, loading it the first time; nil
// when none is configured.
func (t *TLS) Certificate() (*tls.Certificate, error) {
	if t.cert == nil && t.certErr == nil && t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		t.cert, t.certErr = &cert, err
		if err != nil {
			t.cert = nil
		}
	}
	return t.cert, t.certErr
}

// Backend is the MTA that receives the mail we let through.
type Backend struct {
	// The MTA behind mxguard, "host:port".
	Address string `toml:"address"`
	// ClientIdentity is how the backend learns the real client: "xclient"
	// (Postfix), "proxy-v1" or "proxy-v2" (Postfix or Exim), or "none".
	ClientIdentity Identity `toml:"client_identity"`
	// How long connecting to the backend may take.
	DialTimeout Duration `toml:"dial_timeout"`
	// How long to wait for each backend reply.
	CommandTimeout Duration `toml:"command_timeout"`
	// How long to wait for the backend's reply to the end of data.
	DataTimeout Duration `toml:"data_timeout"`
	// PreparedConnections is how many backend connections are kept
	// connected and greeted ahead of clients, so that a client's first
	// transaction does not wait for the connection and the backend's
	// greeting. XCLIENT or the PROXY header is still sent for each client,
	// and each connection serves one client. They are kept while clients
	// keep coming, each at most 10 seconds; 0 dials for each client.
	PreparedConnections int `toml:"prepared_connections"`
}

// DNS configures the one caching resolver all checks share.
type DNS struct {
	// Resolvers are "ip" or "ip:port"; empty means /etc/resolv.conf.
	Resolvers []string `toml:"resolvers"`
	// How long to wait for each query attempt.
	Timeout Duration `toml:"timeout"`
	// Tries per resolver; truncated UDP answers are asked again over TCP.
	Attempts int `toml:"attempts"`
	// Answers kept (least recently used first out; each for its own TTL, NXDOMAIN and NODATA for the SOA minimum).
	CacheSize int `toml:"cache_size"`
	// The shortest time an answer is cached.
	MinTTL Duration `toml:"min_ttl"`
	// The longest time an answer is cached.
	MaxTTL Duration `toml:"max_ttl"`
}

// HELO switches the HELO checks that cost something.
type HELO struct {
	// ForwardDNS looks the HELO name up and wants the client's address
	// among its A/AAAA records.
	ForwardDNS bool `toml:"forward_dns"`
}

// DNSBL configures DNS block and allow lists, in postscreen's syntax:
// "zen.spamhaus.org=127.0.0.[2..11]*3", "list.dnswl.org=127.0.[0..255].[1..3]*-5".
type DNSBL struct {
	// Sites are lists for the client's address (DNSBL; DNSWL with a
	// negative weight). Lookups start when the client connects.
	Sites []string `toml:"sites"`
	// DomainSites are lists for the sender's and the HELO domain (RHSBL).
	DomainSites []string `toml:"domain_sites"`
	// Threshold: a score at or above it refuses the client (outcome dnsbl).
	Threshold float64 `toml:"threshold"`
	// AllowlistThreshold: a score at or below it (negative) skips the
	// greeting delay and the connection tests (outcome dnswl); 0 = off.
	AllowlistThreshold float64 `toml:"allowlist_threshold"`
	// How long all lists together may take; a list that has not answered counts as not listing (and is logged).
	Timeout Duration `toml:"timeout"`
	// How often the lists are tested at their RFC 5782 test points: a list that lists 127.0.0.1, misses 127.0.0.2 or answers error codes is skipped until it heals.
	SelfTestInterval Duration `toml:"self_test_interval"`
	// Look IPv6 clients up too (nibble-reversed).
	IPv6 bool `toml:"ipv6"`
	// ReplyMap shows a list under another name (hides a key in the zone).
	ReplyMap map[string]string `toml:"reply_map"`
	// PassTTL is how long a client no list named is remembered as such,
	// so that it is not looked up again meanwhile, across restarts and
	// instances (postscreen_dnsbl_max_ttl); "0s" looks up every connection.
	PassTTL Duration `toml:"pass_ttl"`
}

// SPF checks the envelope sender (or the HELO name for <>) at MAIL FROM.
type SPF struct {
	// Check SPF at MAIL FROM (the HELO name for the null sender), with RFC 7208's limits.
	Enabled bool `toml:"enabled"`
	// How long one SPF evaluation may take.
	Timeout Duration `toml:"timeout"`
}

// DKIM verifies signatures after DATA, before the backend sees the message.
type DKIM struct {
	// Verify DKIM signatures after DATA, before the backend sees the message.
	Enabled bool `toml:"enabled"`
	// Signatures verified per message; each costs a DNS query and a pass over the body, and the rest are ignored (RFC 6376 6.1).
	MaxSignatures int `toml:"max_signatures"`
	// How long the key look-ups of one message may take.
	Timeout Duration `toml:"timeout"`
}

// DMARC applies the From domain's policy (needs SPF and DKIM).
type DMARC struct {
	// Apply the From domain's DMARC policy after DATA (needs spf.enabled and dkim.enabled).
	Enabled bool `toml:"enabled"`
	// How long the policy look-up may take.
	Timeout Duration `toml:"timeout"`
}

// Headers are what mxguard adds to the messages it relays.
type Headers struct {
	// AuthenticationResults prepends an Authentication-Results header
	// (authserv-id = hostname) and removes forged ones claiming our id.
	AuthenticationResults bool `toml:"authentication_results"`
	// Prepend a Received-SPF header.
	ReceivedSPF bool `toml:"received_spf"`
	// Tag are the header lines added to tagged mail; ScoreHeader, if set,
	// names a header holding the session score.
	Tag []string `toml:"tag"`
	// The header holding the session score; "" for none.
	ScoreHeader string `toml:"score_header"`
}

// Message is how a message is held between the client and the backend.
type Message struct {
	// MemoryLimit is held in memory; the rest spills to a file in SpoolDir,
	// removed whatever happens.
	MemoryLimit int64 `toml:"memory_limit"`
	// Where a message over memory_limit is spooled; "" is the system's temporary directory.
	SpoolDir string `toml:"spool_dir"`
}

// Reputation is the memory of client addresses, kept in the state store:
// per address and per /24 (IPv4) or /64 (IPv6).
type Reputation struct {
	// GreetPassTTL is how long a client that waited politely for the banner
	// skips the greeting delay (postscreen_greet_ttl); "0s" = never.
	GreetPassTTL Duration `toml:"greet_pass_ttl"`
	// HalfLife is how fast an address's history fades: its counts of
	// accepted and refused mail halve in this time.
	HalfLife Duration `toml:"half_life"`
	// Retention is how long an address or network that is no longer seen
	// is remembered.
	Retention Duration `toml:"retention"`
}

// State is where mxguard keeps what it learns of clients — reputation,
// connection-test passes, greylisting, shared rate limits — so that it
// lasts across restarts and, with Redis, is shared by every mxguard
// behind one MX name.
type State struct {
	// Store is "bolt" (one file that survives restarts, the default),
	// "redis" (shared by a fleet) or "memory" (lost when mxguard stops:
	// for trying it out).
	Store StoreKind `toml:"store"`
	// File is the bolt file, created (with its directory, mode 0750) at
	// first start. The Debian package's state directory is /var/lib/mxguard.
	File string `toml:"file"`
	// RedisAddress is the Redis server's "host:port".
	RedisAddress string `toml:"redis_address"`
	// RedisUsername and RedisPassword authenticate to Redis when set.
	RedisUsername string `toml:"redis_username"`
	// RedisPassword authenticates to Redis when set.
	RedisPassword string `toml:"redis_password"`
	// RedisDB is the Redis database number.
	RedisDB int `toml:"redis_db"`
	// Prefix starts every key in Redis, so that sites sharing a server do
	// not mix ("mxguard:example.org:").
	Prefix string `toml:"prefix"`
	// ReadTimeout bounds each read from Redis a session waits for; past
	// it (or while Redis is down) the client is treated as unknown.
	ReadTimeout Duration `toml:"read_timeout"`
	// WriteQueue is how many writes may wait to be applied in the
	// background; past it writes are dropped (and counted), never waited for.
	WriteQueue int `toml:"write_queue"`
	// ControlSocket is the unix socket where `mxguard state` reaches the
	// running mxguard (the bolt file is locked while it runs); "" is off.
	ControlSocket string `toml:"control_socket"`
}

// Greylist is greylisting (off by default): the first attempt of a new
// client network, sender and recipient triplet is deferred; a retry after
// delay and within retry_window passes. The deferral is a rule
// (greylist.first and greylist.early, tempfail by default).
type Greylist struct {
	// Enabled turns greylisting on.
	Enabled bool `toml:"enabled"`
	// Delay is how long a new triplet is deferred (postgrey: 5 minutes).
	Delay Duration `toml:"delay"`
	// RetryWindow is how long after the first attempt a retry counts
	// (postgrey: 2 days); after it the triplet starts over.
	RetryWindow Duration `toml:"retry_window"`
	// MaxAge is how long a passed triplet is remembered after it was last
	// seen (postgrey: 35 days).
	MaxAge Duration `toml:"max_age"`
	// AutoAllow is how many retried triplets (at most one an hour) make a
	// client network pass from then on (postgrey: 5); 0 is off.
	AutoAllow int `toml:"auto_allow"`
	// IPv4Mask and IPv6Mask group clients into networks: big senders
	// retry from another address of the same pool.
	IPv4Mask int `toml:"ipv4_mask"`
	// IPv6Mask groups IPv6 clients into networks.
	IPv6Mask int `toml:"ipv6_mask"`
}

// RateLimit is rate limiting (each limit off when empty): "COUNT / PERIOD"
// with an optional ", burst N", as rspamd writes buckets ("10 / 1m",
// "100 / 1h, burst 20"). Counted in process memory with one instance, in
// Redis when state.store is "redis", so a fleet enforces one limit. Over a
// limit: outcome ratelimit.<what>, tempfail by default.
type RateLimit struct {
	// ConnectionsPerIP limits new connections per client address.
	ConnectionsPerIP string `toml:"connections_per_ip"`
	// ConnectionsPerNet limits new connections per client /24 or /64.
	ConnectionsPerNet string `toml:"connections_per_net"`
	// MessagesPerIP limits transactions (MAIL FROM) per client address.
	MessagesPerIP string `toml:"messages_per_ip"`
	// MessagesPerNet limits transactions per client /24 or /64.
	MessagesPerNet string `toml:"messages_per_net"`
	// RecipientsPerIP limits recipients per client address.
	RecipientsPerIP string `toml:"recipients_per_ip"`
	// RecipientsPerNet limits recipients per client /24 or /64.
	RecipientsPerNet string `toml:"recipients_per_net"`
	// MessagesPerSenderDomain limits transactions per envelope sender
	// domain, whoever sends them.
	MessagesPerSenderDomain string `toml:"messages_per_sender_domain"`
}

// Log is where the decision log goes.
type Log struct {
	// Path is a file, or "-" for standard output.
	Path string `toml:"path"`
	// "debug", "info", "warn" or "error".
	Level Level `toml:"level"`
}

// Admin is the admin listener: Prometheus metrics at /metrics, /healthz for
// load balancers, and a page of recent decisions at /. Restart to change.
type Admin struct {
	// Listen is "host:port" of the admin listener; "" (the default) is off.
	// It must be a loopback address unless allow_remote is set.
	Listen string `toml:"listen"`
	// AllowRemote lets listen be a non-loopback address (then set auth_file).
	AllowRemote bool `toml:"allow_remote"`
	// AuthFile holds "user:bcrypt-hash" lines (htpasswd -B); when set, the
	// page and /metrics ask for HTTP basic authentication (/healthz does
	// not, for load balancers).
	AuthFile string `toml:"auth_file"`
	// RecentSessions is how many sessions the page of recent decisions
	// keeps in memory.
	RecentSessions int `toml:"recent_sessions"`
}

// Default returns the built-in configuration every file starts from.
func Default() *Config {
	host, _ := os.Hostname()
	return &Config{
		Hostname:     host,
		LocalDomains: []string{},
		Rules:        []string{},
		OwnIPs:       []netip.Addr{},
		TrustedNetworks: []Prefix{
			{netip.MustParsePrefix("127.0.0.0/8")},
			{netip.MustParsePrefix("::1/128")},
		},
		Listen: Listen{
			Addresses:            []string{":25"},
			GreetDelay:           Duration(6 * time.Second),
			BaitBanner:           true,
			ProxyProtocolFrom:    []Prefix{},
			ProxyProtocolTimeout: Duration(5 * time.Second),
			ProxyProtocolUnknown: UnknownUntrusted,
		},
		Limits: Limits{
			MaxConnections:       10000,
			MaxConnectionsPerIP:  20,
			MaxConnectionsPerNet: 50,
			ConnectionRatePerIP:  300,
			JunkCommandLimit:     100,
			HardErrorLimit:       20,
			UnknownCommandLimit:  10,
			NULBytes:             NULRefuse,
			MaxRecipients:        100,
			MaxMessageSize:       25 << 20,
			MaxLineLength:        8192,
			CommandTimeout:       Duration(5 * time.Minute),
			DataTimeout:          Duration(10 * time.Minute),
			WriteTimeout:         Duration(time.Minute),
			SessionTimeout:       Duration(20 * time.Minute),
			ShutdownTimeout:      Duration(30 * time.Second),
		},
		Stress: Stress{
			Threshold:           70,
			MinDuration:         Duration(time.Minute),
			GreetDelay:          Duration(2 * time.Second),
			CommandTimeout:      Duration(10 * time.Second),
			JunkCommandLimit:    1,
			HardErrorLimit:      1,
			UnknownCommandLimit: 1,
		},
		Tests: Tests{NonSMTP: true, PassTTL: Duration(30 * 24 * time.Hour)},
		Backend: Backend{
			Address:             "127.0.0.1:10025",
			ClientIdentity:      IdentityXCLIENT,
			DialTimeout:         Duration(10 * time.Second),
			CommandTimeout:      Duration(5 * time.Minute),
			DataTimeout:         Duration(10 * time.Minute),
			PreparedConnections: 4,
		},
		DNS: DNS{
			Resolvers: []string{},
			Timeout:   Duration(2 * time.Second),
			Attempts:  2,
			CacheSize: 10000,
			MinTTL:    Duration(30 * time.Second),
			MaxTTL:    Duration(time.Hour),
		},
		HELO: HELO{ForwardDNS: true},
		DNSBL: DNSBL{
			Sites:            []string{},
			DomainSites:      []string{},
			Threshold:        1,
			Timeout:          Duration(2 * time.Second),
			SelfTestInterval: Duration(30 * time.Minute),
			IPv6:             true,
			PassTTL:          Duration(time.Hour),
		},
		SPF:   SPF{Enabled: true, Timeout: Duration(10 * time.Second)},
		DKIM:  DKIM{Enabled: true, MaxSignatures: 5, Timeout: Duration(10 * time.Second)},
		DMARC: DMARC{Enabled: true, Timeout: Duration(5 * time.Second)},
		Headers: Headers{
			AuthenticationResults: true,
			Tag:                   []string{"X-Spam-Flag: YES"},
			ScoreHeader:           "X-Spam-Score",
		},
		Message: Message{MemoryLimit: 1 << 20},
		Reputation: Reputation{
			GreetPassTTL: Duration(24 * time.Hour),
			HalfLife:     Duration(7 * 24 * time.Hour),
			Retention:    Duration(35 * 24 * time.Hour),
		},
		State: State{
			Store:         StoreBolt,
			File:          DefaultStateFile,
			RedisAddress:  "127.0.0.1:6379",
			Prefix:        "mxguard:",
			ReadTimeout:   Duration(100 * time.Millisecond),
			WriteQueue:    4096,
			ControlSocket: "/run/mxguard/control.sock",
		},
		Greylist: Greylist{
			Delay:       Duration(5 * time.Minute),
			RetryWindow: Duration(48 * time.Hour),
			MaxAge:      Duration(35 * 24 * time.Hour),
			AutoAllow:   5,
			IPv4Mask:    24,
			IPv6Mask:    64,
		},
		Log:   Log{Path: "-", Level: LevelInfo},
		Admin: Admin{RecentSessions: 1000},
	}
}
