package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Duration is a time.Duration written as a string: "6s", "5m", "1h30m".
type Duration time.Duration

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("bad duration %q (write it like \"6s\" or \"5m\")", b)
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", b)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Prefix is a network in CIDR form; a bare address means just that host.
type Prefix struct{ netip.Prefix }

func (p *Prefix) UnmarshalText(b []byte) error {
	s := string(b)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("bad network %q: want an address or CIDR like 192.0.2.0/24", s)
		}
		p.Prefix = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		return nil
	}
	v, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("bad network %q: want an address or CIDR like 192.0.2.0/24", s)
	}
	if v.Masked() != v {
		return fmt.Errorf("bad network %q: host bits set (did you mean %s?)", s, v.Masked())
	}
	p.Prefix = v
	return nil
}

func (p Prefix) MarshalText() ([]byte, error) { return []byte(p.Prefix.String()), nil }

// enum is a closed set of words a key accepts.
func enum(key string, b []byte, words ...string) (string, error) {
	s := string(b)
	for _, w := range words {
		if s == w {
			return s, nil
		}
	}
	return "", fmt.Errorf("bad %s %q: want one of %s", key, s, strings.Join(words, ", "))
}

// Identity is how the backend learns the real client.
type Identity string

const (
	IdentityNone    Identity = "none"
	IdentityXCLIENT Identity = "xclient"
	IdentityProxyV1 Identity = "proxy-v1"
	IdentityProxyV2 Identity = "proxy-v2"
)

func (v *Identity) UnmarshalText(b []byte) error {
	s, err := enum("client_identity", b, "none", "xclient", "proxy-v1", "proxy-v2")
	*v = Identity(s)
	return err
}

// NULPolicy is what a NUL byte gets.
type NULPolicy string

const (
	NULRefuse NULPolicy = "refuse"
	NULRemove NULPolicy = "remove"
)

func (v *NULPolicy) UnmarshalText(b []byte) error {
	s, err := enum("nul_bytes", b, "refuse", "remove")
	*v = NULPolicy(s)
	return err
}

// UnknownPolicy is what a PROXY header naming no client gets.
type UnknownPolicy string

const (
	UnknownUntrusted UnknownPolicy = "untrusted"
	UnknownRefuse    UnknownPolicy = "refuse"
)

func (v *UnknownPolicy) UnmarshalText(b []byte) error {
	s, err := enum("proxy_protocol_unknown", b, "untrusted", "refuse")
	*v = UnknownPolicy(s)
	return err
}

// StoreKind is which state store to use.
type StoreKind string

const (
	StoreBolt   StoreKind = "bolt"
	StoreRedis  StoreKind = "redis"
	StoreMemory StoreKind = "memory"
)

func (v *StoreKind) UnmarshalText(b []byte) error {
	s, err := enum("store", b, "bolt", "redis", "memory")
	*v = StoreKind(s)
	return err
}

// Level is the log level.
type Level string

const (
	LevelDebug Level = "debug"
	LevelInfo  Level = "info"
	LevelWarn  Level = "warn"
	LevelError Level = "error"
)

func (v *Level) UnmarshalText(b []byte) error {
	s, err := enum("level", b, "debug", "info", "warn", "error")
	*v = Level(s)
	return err
}
