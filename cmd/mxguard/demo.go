package main

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/mailsink"
	"github.com/mxguard/mxguard/proxy"
	"github.com/mxguard/mxguard/state"
	"github.com/mxguard/mxguard/zonedns"
)

//go:embed demo.zone
var demoZone string

const defaultDemoDelay = 3 * time.Second

func demoFlags(fs *flag.FlagSet) runner {
	listen := fs.String("listen", "127.0.0.1:2525", "where the demo listens")
	dir := fs.String("dir", "mxguard-demo", "folder for the demo backend's mail")
	delay := fs.Duration("greet-delay", defaultDemoDelay, "greeting delay")
	return noArgs("demo", func(stdout, stderr io.Writer) int { return demo(*listen, *dir, *delay, stdout, stderr) })
}

// demo runs mxguard on loopback in front of a built-in backend that stores
// mail in a folder, with a built-in DNS zone, so a newcomer sees it work
// without an MTA or a network.
func demo(listen, dir string, delay time.Duration, stdout, stderr io.Writer) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	mailDir := filepath.Join(dir, "mail")
	if err := os.MkdirAll(mailDir, 0o755); err != nil {
		fmt.Fprintf(stderr, "mxguard demo: %v\n", err)
		return 1
	}
	dns, err := zonedns.New(demoZone)
	if err == nil {
		err = dns.Start("127.0.0.1:0")
	}
	if err != nil {
		fmt.Fprintf(stderr, "mxguard demo: dns: %v\n", err)
		return 1
	}
	defer dns.Close()
	sink := &mailsink.Server{Hostname: "backend.demo.example", Dir: mailDir, XCLIENT: true}
	if err := sink.Start("127.0.0.1:0"); err != nil {
		fmt.Fprintf(stderr, "mxguard demo: backend: %v\n", err)
		return 1
	}
	defer sink.Close()

	cfg := config.Default()
	cfg.Path = "(demo)"
	cfg.Hostname = "mx.demo.example"
	cfg.LocalDomains = []string{"demo.example"}
	cfg.TrustedNetworks = nil // the demo's clients come from loopback: check them
	cfg.OwnIPs = []netip.Addr{}
	cfg.Listen.Addresses = []string{listen}
	cfg.Listen.GreetDelay = config.Duration(delay)
	// Every connection takes the greeting test: in a demo, a polite client
	// must not earn a pass that lets the next (early-talking) try through.
	cfg.Reputation.GreetPassTTL = 0
	cfg.Tests.PassTTL = 0
	cfg.DNSBL.PassTTL = 0
	cfg.Backend.Address = sink.Addr()
	cfg.State.Store = config.StoreMemory // the demo leaves nothing behind
	cfg.State.ControlSocket = ""
	cfg.DNS.Resolvers = []string{dns.Addr()}

	logger := slog.New(slog.NewJSONHandler(stdout, nil))
	res, err := newResolver(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "mxguard demo: %v\n", err)
		return 1
	}
	st, err := state.Open(cfg, state.Options{Logger: logger})
	if err != nil {
		fmt.Fprintf(stderr, "mxguard demo: %v\n", err)
		return 1
	}
	defer st.Close()
	rt, err := proxy.NewRuntime(cfg, proxy.Shared{Resolver: res, Memory: newMemory(cfg, st), State: st}, logger)
	if err != nil {
		fmt.Fprintf(stderr, "mxguard demo: %v\n", err)
		return 1
	}
	rt.Start()
	defer rt.Close()
	srv := proxy.New(rt, logger)
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintf(stderr, "mxguard demo: %v\n", err)
		return 1
	}
	wait := int(delay.Seconds()) + 1
	fmt.Fprintf(stderr, `
mxguard demo: listening on %[1]s, in front of a demo backend that stores mail in %[2]s
(greeting delay %[3]s; DNS from a built-in zone on %[4]s). Try, from another terminal:

  clean mail, relayed to the backend:
    swaks --server %[1]s --ehlo mail.sender.example --from alice@sender.example --to bob@demo.example
  invalid HELO (refused at RCPT TO):
    swaks --server %[1]s --ehlo localhost --from alice@sender.example --to bob@demo.example
  forged HELO (the name does not resolve to you):
    swaks --server %[1]s --ehlo elsewhere.sender.example --from alice@sender.example --to bob@demo.example
  hosted-domain spoofing:
    swaks --server %[1]s --ehlo mail.sender.example --from ceo@demo.example --to bob@demo.example
  early talker (talks before the banner, is refused with 554):
    printf 'EHLO mail.sender.example\r\n' | nc -w 5 %[5]s %[6]s
  a web request sent to the mail port (dropped with 554 at its first line):
    (sleep %[7]d; printf 'GET / HTTP/1.1\r\nHost: %[5]s\r\n\r\n'; sleep 1) | nc %[5]s %[6]s

  without swaks (apt-get install swaks), clean mail with nc:
    (sleep %[7]d; printf 'EHLO mail.sender.example\r\nMAIL FROM:<alice@sender.example>\r\nRCPT TO:<bob@demo.example>\r\nDATA\r\nFrom: alice@sender.example\r\nSubject: hello\r\n\r\nHello from the demo.\r\n.\r\nQUIT\r\n'; sleep 1) | nc %[5]s %[6]s

The decision log (JSON lines) follows on standard output. Ctrl-C stops the demo.

`, listen, mailDir, delay, dns.Addr(), hostOf(listen), portOf(listen), wait)

	<-sigs
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	fmt.Fprintf(stderr, "mxguard demo: stopped; %d message(s) in %s\n", len(sink.Messages()), mailDir)
	return 0
}

func hostOf(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
