// Package config is mxguard's configuration: the TOML schema, its defaults and
// its validation. It is plain data; the other packages are built from it.
//
// Errors name the file and line ("mxguard.toml:12: ..."), unknown keys are
// errors, durations are strings ("6s") and sizes are bytes.
package config

import (
	"net/netip"
	"os"
	"time"
)

// DefaultPath is where `mxguard serve` looks without -config.
const DefaultPath = "/etc/mxguard/mxguard.toml"

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
	TLS        TLS        `toml:"tls"`
	Backend    Backend    `toml:"backend"`
	DNS        DNS        `toml:"dns"`
	HELO       HELO       `toml:"helo"`
	Reputation Reputation `toml:"reputation"`
	Decision   Decision   `toml:"decision"`
	Log        Log        `toml:"log"`

	// Path is the file this configuration was read from ("" for built-in).
	Path string `toml:"-"`

	src *source // where keys are in the file, for errors
}

// Listen is where and how clients are greeted.
type Listen struct {
	Addresses []string `toml:"addresses"`
	// GreetDelay is how long a new client waits for the banner; talking
	// before it is complete is the early-talker (pregreet) test.
	GreetDelay Duration `toml:"greet_delay"`
	// BaitBanner sends "220-<hostname> ESMTP" before the wait, as postscreen
	// does: bots that do not read multi-line replies talk into it.
	BaitBanner bool `toml:"bait_banner"`
}

// Limits bound what one client, or all of them, can take.
type Limits struct {
	MaxConnections      int `toml:"max_connections"`
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`
	MaxRecipients       int `toml:"max_recipients"`
	// MaxMessageSize is advertised as SIZE and enforced; keep it at or below
	// the backend's own limit (Postfix message_size_limit).
	MaxMessageSize int64 `toml:"max_message_size"`
	// MaxLineLength bounds command and message lines alike (go-smtp applies
	// one limit to both), so it is generous.
	MaxLineLength int `toml:"max_line_length"`
	// CommandTimeout is how long we wait for each command line.
	CommandTimeout Duration `toml:"command_timeout"`
	// DataTimeout is how long the whole message may take to arrive.
	DataTimeout  Duration `toml:"data_timeout"`
	WriteTimeout Duration `toml:"write_timeout"`
	// SessionTimeout bounds a connection's whole life, whatever it does.
	SessionTimeout Duration `toml:"session_timeout"`
	// ShutdownTimeout is how long SIGTERM waits for open sessions.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
}

// TLS offers STARTTLS to clients when a certificate is configured.
type TLS struct {
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// Backend is the MTA that receives the mail we let through.
type Backend struct {
	Address string `toml:"address"`
	// ClientIdentity is how the backend learns the real client: "xclient"
	// (Postfix), "proxy-v1" or "proxy-v2" (Postfix or Exim), or "none".
	ClientIdentity Identity `toml:"client_identity"`
	DialTimeout    Duration `toml:"dial_timeout"`
	CommandTimeout Duration `toml:"command_timeout"`
	DataTimeout    Duration `toml:"data_timeout"`
}

// DNS configures the one caching resolver all checks share.
type DNS struct {
	// Resolvers are "ip" or "ip:port"; empty means /etc/resolv.conf.
	Resolvers []string `toml:"resolvers"`
	Timeout   Duration `toml:"timeout"`
	Attempts  int      `toml:"attempts"`
	CacheSize int      `toml:"cache_size"`
	MinTTL    Duration `toml:"min_ttl"`
	MaxTTL    Duration `toml:"max_ttl"`
}

// HELO switches the HELO checks that cost something.
type HELO struct {
	// ForwardDNS looks the HELO name up and wants the client's address
	// among its A/AAAA records.
	ForwardDNS bool `toml:"forward_dns"`
}

// Reputation is the memory of client addresses.
type Reputation struct {
	// Size is how many addresses (IPv6: /64s) are remembered.
	Size int `toml:"size"`
	// GreetPassTTL is how long a client that waited politely for the banner
	// skips the greeting delay (postscreen_greet_ttl); "0s" = never.
	GreetPassTTL Duration `toml:"greet_pass_ttl"`
	// HalfLife is how fast an address's history fades.
	HalfLife Duration `toml:"half_life"`
}

// Decision turns check outcomes into an action.
type Decision struct {
	// RejectAt is "rcpt" (refuse at RCPT TO, so the log holds the envelope,
	// like Postfix's smtpd_delay_reject) or "immediate".
	RejectAt Stage `toml:"reject_at"`
	// TagScore and RejectScore are session-score thresholds (0 = off).
	TagScore    float64 `toml:"tag_score"`
	RejectScore float64 `toml:"reject_score"`
	// Outcomes override the built-in action, weight or reply of an outcome.
	Outcomes map[string]OutcomeRule `toml:"outcomes"`
}

// OutcomeRule says what an outcome does.
type OutcomeRule struct {
	// Action is one of score, tag, tempfail, reject, drop, ignore.
	Action Action `toml:"action"`
	// Weight is added to the session score (nil: keep the default).
	Weight *float64 `toml:"weight"`
	// Reply replaces the refusal text: "550 5.7.1 Go away".
	Reply string `toml:"reply"`
}

// Log is where the decision log goes.
type Log struct {
	// Path is a file, or "-" for standard output.
	Path  string `toml:"path"`
	Level Level  `toml:"level"`
}

// Default returns the built-in configuration every file starts from.
func Default() *Config {
	host, _ := os.Hostname()
	return &Config{
		Hostname:     host,
		LocalDomains: []string{},
		OwnIPs:       []netip.Addr{},
		TrustedNetworks: []Prefix{
			{netip.MustParsePrefix("127.0.0.0/8")},
			{netip.MustParsePrefix("::1/128")},
		},
		Listen: Listen{
			Addresses:  []string{":25"},
			GreetDelay: Duration(6 * time.Second),
			BaitBanner: true,
		},
		Limits: Limits{
			MaxConnections:      1000,
			MaxConnectionsPerIP: 20,
			MaxRecipients:       100,
			MaxMessageSize:      25 << 20,
			MaxLineLength:       8192,
			CommandTimeout:      Duration(5 * time.Minute),
			DataTimeout:         Duration(10 * time.Minute),
			WriteTimeout:        Duration(time.Minute),
			SessionTimeout:      Duration(time.Hour),
			ShutdownTimeout:     Duration(30 * time.Second),
		},
		Backend: Backend{
			Address:        "127.0.0.1:10025",
			ClientIdentity: IdentityXCLIENT,
			DialTimeout:    Duration(10 * time.Second),
			CommandTimeout: Duration(5 * time.Minute),
			DataTimeout:    Duration(10 * time.Minute),
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
		Reputation: Reputation{
			Size:         100000,
			GreetPassTTL: Duration(24 * time.Hour),
			HalfLife:     Duration(7 * 24 * time.Hour),
		},
		Decision: Decision{
			RejectAt:    StageRcpt,
			TagScore:    5,
			RejectScore: 10,
		},
		Log: Log{Path: "-", Level: LevelInfo},
	}
}
