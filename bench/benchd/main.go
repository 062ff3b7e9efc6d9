// Command benchd runs the pieces of mxguard's benchmark (bench/run.sh) that
// are not mxguard itself, each in the process it is started in, so that the
// CPU time of every process can be read apart:
//
//	benchd -dns 127.0.0.1:0 -host mail.bench.example=127.0.0.11-127.0.0.20   the DNS fixture
//	benchd -sink 127.0.0.1:0                  the in-process backend (mailsink, nothing stored)
//	benchd -relay 127.0.0.1:0 -relay-to ADDR  the bare relay: go-smtp both sides, no checks (relay.go)
//	benchd -rsa-verify KEY.pem                the CPU cost of one RSA signature verification, then exit
//	go tool pprof -traces BIN CPU.pprof | benchd -pprof-groups [-us-per-msg X]
//	                                          a CPU profile split into mxguard's parts (groups.go)
//	benchd -free-ports 3                      print free TCP ports and exit
//
// It prints one "name=address" line per service, then "ready", and runs
// until SIGTERM or SIGINT.
//
// The DNS zone makes every check pass for the benchmark's clients: each
// -host name has an A record for each of its client addresses, each client
// address has a PTR back to its name (forward-confirmed reverse DNS), the
// sender domain has SPF and DMARC records and the DKIM key of -dkim-key, and
// a DNSBL zone lists only the RFC 5782 test points (so clients avoid
// 127.0.0.2). Long TTLs keep a warm cache warm for the whole run.
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/mailsink"
	"github.com/mxguard/mxguard/zonedns"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	dns, sink             string
	relay, relayTo        string
	rsaVerify             string
	rsaSeconds            float64
	pprofGroups           bool
	usPerMsg              float64
	freePorts             int
	hosts                 hostList
	senderDomain          string
	dkimKey, dkimSelector string
	dnsblZone             string
}

// hostList is the repeatable -host flag: "name=addresses".
type hostList []hostEntry

type hostEntry struct {
	name  string
	addrs []netip.Addr
}

func (h *hostList) String() string { return fmt.Sprint(len(*h), " hosts") }

func (h *hostList) Set(v string) error {
	name, list, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("want NAME=ADDRESSES, e.g. mail.bench.example=127.0.0.11-127.0.0.20")
	}
	addrs, err := parseClients(list)
	if err != nil {
		return err
	}
	*h = append(*h, hostEntry{strings.TrimSuffix(name, ".") + ".", addrs})
	return nil
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("benchd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.dns, "dns", "", "serve the benchmark DNS zone on this `address` (UDP and TCP)")
	fs.StringVar(&o.sink, "sink", "", "run the mailsink backend on this `address` (XCLIENT on, nothing stored)")
	fs.StringVar(&o.relay, "relay", "", "run the bare relay (go-smtp server and client, no checks) on this `address`")
	fs.StringVar(&o.relayTo, "relay-to", "", "the bare relay's backend `host:port`")
	fs.StringVar(&o.rsaVerify, "rsa-verify", "", "measure the CPU time of one crypto/rsa PKCS#1 v1.5 SHA-256 verification "+
		"with the public half of this PEM private key `file` (as a DKIM verifier does it), print it and exit")
	fs.Float64Var(&o.rsaSeconds, "rsa-seconds", 1, "how long -rsa-verify runs")
	fs.BoolVar(&o.pprofGroups, "pprof-groups", false, "read `go tool pprof -traces` output on standard input and print "+
		"the share of the CPU in each part of mxguard (the state store, the checks, the backend client, ...), then exit")
	fs.Float64Var(&o.usPerMsg, "us-per-msg", 0, "with -pprof-groups: the CPU per message in µs, to show each part's")
	fs.IntVar(&o.freePorts, "free-ports", 0, "print `N` free TCP ports on 127.0.0.1 and exit")
	fs.Var(&o.hosts, "host", "`name=addresses`: a client HELO name and its addresses (comma list, "+
		"ranges like 127.0.0.11-127.0.0.20); repeatable; default mail.bench.example=127.0.0.11-127.0.0.20")
	fs.StringVar(&o.senderDomain, "sender-domain", "bench.example", "the senders' domain (SPF, DMARC, DKIM records)")
	fs.StringVar(&o.dkimKey, "dkim-key", "", "publish this PEM private key's public half as the DKIM key; "+
		"a missing `file` is created (RSA 2048)")
	fs.StringVar(&o.dkimSelector, "dkim-selector", "bench", "DKIM selector")
	fs.StringVar(&o.dnsblZone, "dnsbl-zone", "dnsbl.bench.example", "DNSBL zone served (lists only the RFC 5782 test points)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.freePorts > 0 {
		ports, err := freePorts(o.freePorts)
		if err != nil {
			fmt.Fprintf(stderr, "benchd: %v\n", err)
			return 1
		}
		for _, p := range ports {
			fmt.Fprintln(stdout, p)
		}
		return 0
	}
	if o.pprofGroups {
		if err := printGroups(os.Stdin, stdout, o.usPerMsg); err != nil {
			fmt.Fprintf(stderr, "benchd: %v\n", err)
			return 1
		}
		return 0
	}
	if o.rsaVerify != "" {
		res, err := measureRSAVerify(o.rsaVerify, time.Duration(o.rsaSeconds*float64(time.Second)))
		if err != nil {
			fmt.Fprintf(stderr, "benchd: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "rsa_verify_cpu_us=%.2f\nrsa_verify_wall_us=%.2f\nrsa_verify_ops=%d\nrsa_bits=%d\n",
			res.cpuMicros, res.wallMicros, res.ops, res.bits)
		return 0
	}
	if o.dns == "" && o.sink == "" && o.relay == "" {
		fmt.Fprintln(stderr, "benchd: nothing to run: give -dns, -sink or -relay")
		return 2
	}
	if o.relay != "" && o.relayTo == "" {
		fmt.Fprintln(stderr, "benchd: -relay needs -relay-to")
		return 2
	}
	if len(o.hosts) == 0 {
		o.hosts.Set("mail.bench.example=127.0.0.11-127.0.0.20")
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "benchd: "+format+"\n", args...)
		return 1
	}

	dnsAddr := ""
	if o.dns != "" {
		zone, err := benchZone(o)
		if err != nil {
			return fail("dns: %v", err)
		}
		srv, err := zonedns.New(zone)
		if err == nil {
			err = srv.Start(o.dns)
		}
		if err != nil {
			return fail("dns: %v", err)
		}
		closers = append(closers, func() { srv.Close() })
		dnsAddr = srv.Addr()
		fmt.Fprintf(stdout, "dns=%s\n", dnsAddr)
	}
	if o.sink != "" {
		store := false
		sink := &mailsink.Server{
			Hostname: "sink.bench.example",
			XCLIENT:  true,
			// Reply as usual but keep nothing: memory stays flat over
			// any number of messages.
			Policy: mailsink.PolicyFuncs{DataEndFunc: func(*mailsink.SessionInfo, *mailsink.Message) *mailsink.Action {
				return &mailsink.Action{Store: &store}
			}},
			ReadTimeout: 5 * time.Minute,
		}
		if err := sink.Start(o.sink); err != nil {
			return fail("sink: %v", err)
		}
		closers = append(closers, func() { sink.Close() })
		// The session records are dropped now and then, for the same reason.
		stop := make(chan struct{})
		go func() {
			t := time.NewTicker(5 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					sink.Reset()
				case <-stop:
					return
				}
			}
		}()
		closers = append(closers, func() { close(stop) })
		fmt.Fprintf(stdout, "sink=%s\n", sink.Addr())
	}
	if o.relay != "" {
		l, srv, err := startRelay(o.relay, o.relayTo)
		if err != nil {
			return fail("relay: %v", err)
		}
		closers = append(closers, func() { srv.Close(); l.Close() })
		fmt.Fprintf(stdout, "relay=%s\n", l.Addr())
	}
	fmt.Fprintln(stdout, "ready")
	if f, ok := stdout.(*os.File); ok {
		f.Sync()
	}
	<-sigs
	return 0
}

// benchZone is the fixture's master file.
func benchZone(o options) (string, error) {
	dom := strings.TrimSuffix(o.senderDomain, ".") + "."
	var b strings.Builder
	b.WriteString("$TTL 86400\n")
	soa := func(origin string) {
		fmt.Fprintf(&b, "$ORIGIN %s\n@ SOA ns.%s hostmaster.%s 1 3600 600 86400 3600\n", origin, dom, dom)
	}
	soa(dom)
	fmt.Fprintf(&b, "@ MX 10 mx\nmx A 127.0.0.1\n")
	fmt.Fprintf(&b, "@ TXT \"v=spf1 ip4:127.0.0.0/8 ip6:::1 -all\"\n")
	fmt.Fprintf(&b, "_dmarc TXT \"v=DMARC1; p=reject\"\n")
	if o.dkimKey != "" {
		rec, err := dkimRecord(o.dkimKey)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s._domainkey %s\n", o.dkimSelector, txt(rec))
	}
	for _, h := range o.hosts {
		if !strings.HasSuffix(h.name, "."+dom) {
			return "", fmt.Errorf("-host %s is not under -sender-domain %s", h.name, dom)
		}
		for _, a := range h.addrs {
			typ := "A"
			if a.Is6() {
				typ = "AAAA"
			}
			fmt.Fprintf(&b, "%s %s %s\n", h.name, typ, a)
		}
	}
	// Reverse zones: one per IPv4 /24, one per IPv6 address.
	seen := map[string]bool{}
	for _, h := range o.hosts {
		for _, a := range h.addrs {
			arpa := reverseName(a)
			zone := arpa
			if a.Is4() {
				zone = arpa[strings.IndexByte(arpa, '.')+1:]
			}
			if !seen[zone] {
				seen[zone] = true
				soa(zone)
			}
			fmt.Fprintf(&b, "%s PTR %s\n", arpa, h.name)
		}
	}
	// A DNSBL (and RHSBL) that lists nothing but its RFC 5782 test points.
	bl := strings.TrimSuffix(o.dnsblZone, ".") + "."
	soa(bl)
	b.WriteString("2.0.0.127 A 127.0.0.2\n2.0.0.127 TXT \"test point\"\n")
	b.WriteString("test A 127.0.0.2\ntest TXT \"test point\"\n")
	v6 := strings.TrimSuffix(reverseName(netip.MustParseAddr("::ffff:127.0.0.2")), "ip6.arpa.")
	fmt.Fprintf(&b, "%s%s A 127.0.0.2\n", v6, bl)
	return b.String(), nil
}

func txt(s string) string {
	var parts []string
	for len(s) > 250 {
		parts = append(parts, `"`+s[:250]+`"`)
		s = s[250:]
	}
	return "TXT " + strings.Join(append(parts, `"`+s+`"`), " ")
}

func reverseName(a netip.Addr) string {
	if a.Is4() {
		b := a.As4()
		return fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa.", b[3], b[2], b[1], b[0])
	}
	b := a.As16()
	var sb strings.Builder
	for i := 15; i >= 0; i-- {
		fmt.Fprintf(&sb, "%x.%x.", b[i]&15, b[i]>>4)
	}
	return sb.String() + "ip6.arpa."
}

// parseClients reads "127.0.0.11-127.0.0.20,::1".
func parseClients(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := netip.ParseAddr(lo)
		if err != nil {
			return nil, fmt.Errorf("-clients: bad address %q", lo)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b, err := netip.ParseAddr(hi)
		if err != nil || b.Less(a) || a.Is4() != b.Is4() {
			return nil, fmt.Errorf("-clients: bad range %q", f)
		}
		for x := a; x.Compare(b) <= 0 && len(out) < 4096; x = x.Next() {
			out = append(out, x)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-clients: no address")
	}
	return out, nil
}

// dkimRecord returns the DKIM key record for the private key in path,
// creating an RSA-2048 key there if the file does not exist.
func dkimRecord(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return "", err
		}
		b = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return "", fmt.Errorf("%s: no PEM block", path)
	}
	var key any
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		err = fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		der, err := x509.MarshalPKIXPublicKey(k.Public())
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PrivateKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k.Public().(ed25519.PublicKey)), nil
	}
	return "", fmt.Errorf("%s: %T is not an RSA or Ed25519 key", path, key)
}

// freePorts asks the kernel for n free ports. They are free when returned;
// the caller checks again before use.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
