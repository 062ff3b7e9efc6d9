// Package proxy is mxguard's SMTP side: it accepts clients, holds the
// greeting, runs the checks at each stage of the dialogue, asks the rules
// what to do, and relays what passes to the backend MTA in lockstep.
//
//	listener → greeting → go-smtp session → checks → rules → backend
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/metrics"
	"github.com/pires/go-proxyproto"
)

// Server is a running mxguard front end.
type Server struct {
	log *slog.Logger
	rt  atomic.Pointer[Runtime]
	lim *limiter

	mu        sync.Mutex
	listeners []net.Listener
	front     *front             // where new connections go
	fronts    []*front           // all go-smtp servers still serving someone
	greeting  map[*conn]struct{} // in the greeting stage
	conns     map[*conn]struct{} // all open
	pools     map[*Runtime]*bePool
	banner    map[*conn]struct{} // parked after the banner, not yet go-smtp's
	closing   bool

	poll     *poller // parked connections' sockets (park.go)
	pollOnce sync.Once
	bannerWG sync.WaitGroup // connections parked after the banner, until go-smtp has them
	// parkBannerOver: connections are parked after the banner while more
	// than this many are open (afterBanner).
	parkBannerOver int
	// Woken connections resume on at most maxResuming goroutines (park.go).
	resumeMu sync.Mutex
	resuming int
	resumeQ  []resumption

	stressed                 atomic.Bool
	stressStart, stressSince time.Time   // under mu: when the episode began; when the load was last high
	stressCheck              *time.Timer // under mu: a pending check for the end of stress

	wg sync.WaitGroup // accept loops and greeting goroutines
}

// front is one go-smtp server, fed by the greeting stage. A reload starts a
// new one; the old one keeps serving the sessions it has.
type front struct {
	srv *smtp.Server
	ln  *chanListener
}

// New returns a server that will run under rt.
func New(rt *Runtime, logger *slog.Logger) *Server {
	s := &Server{log: logger, lim: newLimiter(), greeting: map[*conn]struct{}{}, conns: map[*conn]struct{}{},
		pools: map[*Runtime]*bePool{}, banner: map[*conn]struct{}{}, parkBannerOver: 100}
	s.rt.Store(rt)
	s.front = s.newFront(rt)
	s.fronts = []*front{s.front}
	return s
}

// Open returns how many client connections are open.
func (s *Server) Open() int { return s.lim.open() }

// Runtime returns the configuration new sessions start under.
func (s *Server) Runtime() *Runtime { return s.rt.Load() }

// ListenAndServe opens the configured listen addresses and serves them.
func (s *Server) ListenAndServe() error {
	for _, addr := range s.rt.Load().Cfg.Listen.Addresses {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			s.Shutdown(context.Background())
			return err
		}
		s.Serve(l)
	}
	return nil
}

// Serve accepts clients on l until Shutdown. It returns at once. With
// listen.proxy_protocol_from set, connections from those load balancers
// must begin with a PROXY header naming the real client; others are taken
// as they come and any header they send is not believed.
func (s *Server) Serve(l net.Listener) {
	if lbs := s.rt.Load().Cfg.Listen.ProxyProtocolFrom; len(lbs) > 0 {
		l = &proxyproto.Listener{
			Listener:          l,
			ReadHeaderTimeout: s.rt.Load().Cfg.Listen.ProxyProtocolTimeout.D(),
			ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
				ip := addrPort(o.Upstream).Addr()
				for _, p := range lbs {
					if p.Contains(ip) {
						return proxyproto.REQUIRE, nil
					}
				}
				return proxyproto.SKIP, nil
			},
		}
	}
	s.mu.Lock()
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	s.log.Info("listening", "addr", l.Addr().String())
	s.wg.Add(1)
	go s.acceptLoop(l)
}

// Addrs returns the addresses being listened on.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var a []net.Addr
	for _, l := range s.listeners {
		a = append(a, l.Addr())
	}
	return a
}

// Reload makes new connections run under rt; sessions in flight finish under
// the runtime they started with.
func (s *Server) Reload(rt *Runtime) {
	f := s.newFront(rt)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		f.ln.Close()
		return
	}
	old := s.front
	s.front = f
	s.fronts = append(s.fronts, f)
	s.rt.Store(rt)
	pools := s.pools
	s.pools = map[*Runtime]*bePool{}
	s.mu.Unlock()
	old.ln.Close() // its Serve returns; its sessions go on
	// Sessions still running under the old configuration dial for
	// themselves from now on.
	for _, p := range pools {
		go p.close()
	}
}

// pool returns the prepared backend connections of rt (made at first use),
// or nil: none configured, or rt replaced by a reload, or shutting down.
func (s *Server) pool(rt *Runtime) *bePool {
	n := rt.Cfg.Backend.PreparedConnections
	if n <= 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.pools[rt]; p != nil || s.closing || rt != s.rt.Load() {
		return p
	}
	p := newBEPool(rt.Backend, n)
	s.pools[rt] = p
	return p
}

// Shutdown stops accepting, refuses clients still in the greeting, and waits
// for open sessions to finish until ctx ends, then closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	if s.stressCheck != nil {
		s.stressCheck.Stop()
	}
	for _, l := range s.listeners {
		l.Close()
	}
	for c := range s.greeting {
		c.interrupt() // its goroutine says 421 and hangs up
	}
	fronts := s.fronts
	pools := s.pools
	s.pools = map[*Runtime]*bePool{}
	for c := range s.banner {
		// Greeted already: a session, as if go-smtp had it, which it
		// now gets, to serve it until it ends or the time is up.
		c.wake(wokeShutdown)
	}
	s.mu.Unlock()
	s.bannerWG.Wait()
	for _, p := range pools {
		p.close()
	}

	var wg sync.WaitGroup
	for _, f := range fronts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.srv.Shutdown(context.Background()) // returns when its sessions end
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		// go-smtp's Close does nothing once Shutdown has begun, so the
		// sessions still open are cut here: each one's goroutine closes it.
		s.mu.Lock()
		open := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			open = append(open, c)
		}
		s.mu.Unlock()
		for _, c := range open {
			c.interrupt()
		}
		n := len(open)
		<-done
		err = fmt.Errorf("shutdown: closed %d sessions still open after the timeout", n)
	}
	s.wg.Wait()
	if s.poll != nil {
		s.poll.close() // nothing is parked any more
	}
	return err
}

func (s *Server) acceptLoop(l net.Listener) {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, do not spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Error("accept failed", "addr", l.Addr().String(), "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.wg.Add(1)
		go s.handle(nc)
	}
}

// handle runs one new connection through the connection stage: limits, then
// the greeting, then go-smtp. The wait happens here, never in Accept.
func (s *Server) handle(nc net.Conn) {
	defer s.wg.Done()
	rt := s.rt.Load()
	lim := &rt.Cfg.Limits
	if pc, ok := nc.(*proxyproto.Conn); ok && pc.ProxyHeader() == nil {
		// Reading the header (within its timeout) happens here, in the
		// connection's own goroutine, never in Accept.
		s.log.Warn("refused", "client", pc.Raw().RemoteAddr().String(), "stage", "connect",
			"action", "drop", "rule", "proxy_protocol", "reason", "no valid PROXY header from a load balancer")
		nc.Close()
		return
	}
	unknown := false
	if pc, ok := nc.(*proxyproto.Conn); ok && pc.ProxyHeader() != nil && pc.ProxyHeader().Command.IsLocal() {
		// The load balancer names no client (v1 UNKNOWN, v2 LOCAL): it is
		// not the client, whatever trusted_networks says of it.
		if rt.Cfg.Listen.ProxyProtocolUnknown == config.UnknownRefuse {
			reply := "421 4.7.0 " + rt.Cfg.Hostname + " Error: client address unknown, try again later"
			s.log.Warn("refused", "client", "unknown", "via", pc.Raw().RemoteAddr().String(), "stage", "connect",
				"action", "tempfail", "rule", "proxy_protocol", "reason", "the PROXY header names no client", "reply", reply)
			nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			nc.Write([]byte(reply + "\r\n"))
			nc.Close()
			return
		}
		unknown = true
	}
	client := addrPort(nc.RemoteAddr())
	if unknown {
		client = netip.AddrPort{}
	}
	ok, full, why := s.lim.acquire(client.Addr(), lim)
	if !ok && full && s.shedOne() {
		s.lim.force(client.Addr()) // the shed connection's slot, as it closes
		ok = true
	}
	if !ok {
		if full {
			why = limitSlots
		}
		rt.Shared.Metrics.Connection(metrics.Limit)
		reply := "421 4.7.0 " + rt.Cfg.Hostname + " Error: " + why + ", try again later"
		s.log.Warn("refused", "client", clientString(client), "stage", "connect", "action", "tempfail",
			"rule", "limit", "check", string(limitCheck), "reason", why, "open", s.lim.open(), "reply", reply)
		nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		nc.Write([]byte(reply + "\r\n"))
		nc.Close()
		return
	}
	s.updateStress(s.lim.open())
	c := s.newConn(nc, rt)
	c.client = client
	if unknown {
		s.log.Info("client unknown", "session", c.id, "via", nc.(*proxyproto.Conn).Raw().RemoteAddr().String(),
			"reason", "the PROXY header names no client: an untrusted client of unknown address")
	}
	// The DNS lists answer while the client waits; a DNS allowlisting ends
	// the wait at once (the Read in greet returns on its deadline).
	c.pipe = rt.Pipeline.NewSession(c.id, c.client, func() { s.endGreeting(c) })
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	if s.log.Enabled(context.Background(), slog.LevelDebug) { // its arguments cost allocations
		s.log.Debug("connect", "session", c.id, "client", clientString(c.client), "to", c.local.String(), "trusted", c.pipe.Trusted())
	}
	s.greet(c) // the greeting, the banner, go-smtp: on other goroutines if it waits
}

// endGreeting wakes the greeting's Read of a connection still waiting in
// it. Only there: a deadline in the past would cut a session later on.
func (s *Server) endGreeting(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, waiting := s.greeting[c]; waiting {
		c.Conn.SetReadDeadline(time.Now())
		c.wake(wokeCut)
	}
}

// closed runs once when a connection ends, on its owning goroutine.
func (s *Server) closed(c *conn) {
	if c.usedPool {
		s.pool(c.rt).refillSoon() // the prepared connection it took is replaced
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	s.lim.release(c.client.Addr())
	s.updateStress(s.lim.open())
	c.pipe.Finish(c.accepted, c.refusals)
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.logSession()
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// handoff gives a connection to the current go-smtp server, which writes the
// (last line of the) banner and runs the dialogue. One that had the banner
// already (afterBanner) is a session: it is handed over during shutdown too,
// as long as go-smtp takes connections.
// It reports whether go-smtp got the connection.
func (s *Server) handoff(c *conn) bool {
	c.ensureWire()
	c.armSessionTimer()
	for {
		s.mu.Lock()
		f, closing := s.front, s.closing
		s.mu.Unlock()
		if closing && !c.wire.bannerSent {
			c.dropWith("421 4.3.2 Service shutting down, try again later")
			return false
		}
		if closing && !f.ln.open() {
			c.dropWith("421 4.3.2 Service shutting down, try again later")
			return false
		}
		if f.ln.push(c) {
			c.rt.Shared.Metrics.Connection(metrics.Accepted)
			return true
		}
		// f was replaced by a reload meanwhile: try the new one.
	}
}

func (s *Server) newFront(rt *Runtime) *front {
	cfg := rt.Cfg
	srv := smtp.NewServer(s)
	srv.Domain = cfg.Hostname
	srv.MaxRecipients = cfg.Limits.MaxRecipients
	srv.MaxMessageBytes = cfg.Limits.MaxMessageSize
	srv.MaxLineLength = cfg.Limits.MaxLineLength
	srv.ReadTimeout = cfg.Limits.CommandTimeout.D()
	srv.WriteTimeout = cfg.Limits.WriteTimeout.D()
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	// No TLSConfig: STARTTLS is the wire's (wire.go), so go-smtp sees
	// plaintext and one session lasts the connection.
	srv.ErrorLog = log.New(slogWriter{s.log}, "", 0)
	f := &front{srv: srv, ln: newChanListener()}
	go srv.Serve(f.ln)
	return f
}

// slogWriter sends go-smtp's own error log (I/O errors of single
// connections, mostly) to the debug level.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug("smtp", "msg", string(p))
	return len(p), nil
}

// chanListener is the net.Listener go-smtp serves: connections arrive from
// the greeting stage instead of from the kernel.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case <-l.done:
		return false
	default:
	}
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) open() bool {
	select {
	case <-l.done:
		return false
	default:
		return true
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero} }

// clientString names a client in the log: "ip:port", or "unknown" when a
// load balancer's PROXY header named none.
func clientString(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return "unknown"
	}
	return ap.String()
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// newID returns a short session id, for logs and Received headers.
func newID() string {
	const digits = "0123456789BCDFGHJKLMNPQRSTVWXYZ"
	var b [12]byte
	n := rand.Uint64()
	for i := range b {
		b[i] = digits[n%uint64(len(digits))]
		n /= uint64(len(digits))
	}
	return string(b[:])
}
