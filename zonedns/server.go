// Package zonedns is a small authoritative DNS server on loopback that
// serves zones given as master-file text. It ships in the binary: "mxguard
// demo" runs with its canned zone, and "mxguard test -zone" answers from a
// zone file. Tests use it (through internal/testsrv) so they never touch
// the real DNS. Faults (timeouts, SERVFAIL, delays, truncation) can be
// switched on per name while it runs.
package zonedns

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Fault changes how the server answers questions for one name.
type Fault struct {
	Drop     bool          // never answer, so the client times out
	Rcode    int           // answer with this rcode and no data; 0 = none
	Delay    time.Duration // answer only after this long
	Truncate bool          // always TC=1 over UDP; TCP still gets the answer
}

// Server serves fixture zones over UDP and TCP on one port.
type Server struct {
	mu     sync.Mutex
	data   *zoneData
	faults map[string]Fault
	counts map[qkey]int
	total  int

	addr   string
	udp    *dns.Server
	tcp    *dns.Server
	served chan error    // one result per serving goroutine
	done   chan struct{} // closed by Close to release delayed answers
	closed bool
}

type qkey struct {
	name  string
	qtype uint16
}

// New parses zone (RFC 1035 master-file text; several zones, each
// with its SOA, may be given) and returns a server that is not yet
// listening.
func New(zone string) (*Server, error) {
	rrs, err := parseZone(zone)
	if err != nil {
		return nil, err
	}
	return &Server{
		data:   newZoneData(rrs),
		faults: make(map[string]Fault),
		counts: make(map[qkey]int),
		done:   make(chan struct{}),
	}, nil
}

// Start listens on addr ("127.0.0.1:0" picks a free port) for both
// UDP and TCP and returns once both are serving.
func (s *Server) Start(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.udp != nil || s.closed {
		return errors.New("zonedns: server already started")
	}
	pc, l, err := listen(addr)
	if err != nil {
		return err
	}

	h := dns.HandlerFunc(s.serve)
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	s.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: notify}
	s.tcp = &dns.Server{Listener: l, Handler: h, NotifyStartedFunc: notify}
	s.served = make(chan error, 2)
	go func() { s.served <- s.udp.ActivateAndServe() }()
	go func() { s.served <- s.tcp.ActivateAndServe() }()
	for range 2 {
		select {
		case <-started:
		case err := <-s.served:
			// One side failed to start; stop the other and
			// wait for it so no goroutine is left behind.
			pc.Close()
			l.Close()
			<-s.served
			s.udp, s.tcp = nil, nil
			return fmt.Errorf("zonedns: start: %v", err)
		}
	}
	s.addr = pc.LocalAddr().String()
	return nil
}

// listen opens UDP and TCP on the same port. With port 0 the TCP port
// chosen for UDP may be taken, so it tries a few times.
func listen(addr string) (net.PacketConn, net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("zonedns: bad address %q: %v", addr, err)
	}
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("zonedns: %v", err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		if port != "0" || try == 10 {
			return nil, nil, fmt.Errorf("zonedns: %v", err)
		}
	}
}

// Addr returns the "ip:port" the server listens on, once started.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Close stops the server. Delayed answers still pending are dropped.
// It returns once every goroutine the server started has ended.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	udp, tcp := s.udp, s.tcp
	s.mu.Unlock()
	if udp == nil {
		return nil
	}
	// Shutdown waits for running handlers, which is why delayed
	// ones watch s.done.
	err := errors.Join(udp.Shutdown(), tcp.Shutdown())
	<-s.served
	<-s.served
	return err
}

// SetZone replaces all data with the zone text.
func (s *Server) SetZone(zone string) error {
	rrs, err := parseZone(zone)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.data = newZoneData(rrs)
	s.mu.Unlock()
	return nil
}

// AddRR adds one record given in master-file form with an absolute
// owner name, e.g. "x.example. 60 IN A 192.0.2.1".
func (s *Server) AddRR(rr string) error {
	r, err := dns.NewRR(rr)
	if err != nil {
		return fmt.Errorf("zonedns: %w", err)
	}
	if r == nil {
		return fmt.Errorf("zonedns: no record in %q", rr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, old := range s.data.rrs {
		if dns.IsDuplicate(old, r) {
			return nil
		}
	}
	s.data = newZoneData(append(slices.Clip(s.data.rrs), r))
	return nil
}

// RemoveRR removes every record of type qtype owned by name.
func (s *Server) RemoveRR(name string, qtype uint16) {
	name = canonical(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	rrs := slices.DeleteFunc(slices.Clone(s.data.rrs), func(rr dns.RR) bool {
		h := rr.Header()
		return h.Rrtype == qtype && canonical(h.Name) == name
	})
	s.data = newZoneData(rrs)
}

// SetFault makes questions for name (any type) fail as f says.
func (s *Server) SetFault(name string, f Fault) {
	s.mu.Lock()
	s.faults[canonical(name)] = f
	s.mu.Unlock()
}

// ClearFault restores normal answers for name.
func (s *Server) ClearFault(name string) {
	s.mu.Lock()
	delete(s.faults, canonical(name))
	s.mu.Unlock()
}

// Queries reports how many questions for name and qtype reached the
// server, over UDP and TCP, including dropped ones.
func (s *Server) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[qkey{canonical(name), qtype}]
}

// TotalQueries reports how many questions reached the server.
func (s *Server) TotalQueries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// ResetCounters sets all query counters to zero.
func (s *Server) ResetCounters() {
	s.mu.Lock()
	clear(s.counts)
	s.total = 0
	s.mu.Unlock()
}

// serve answers one query. miekg/dns runs it in its own goroutine per
// UDP packet (per connection for TCP), so a delayed answer does not
// hold up others.
func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	if len(req.Question) != 1 {
		w.WriteMsg(m.SetRcodeFormatError(req))
		return
	}
	q := req.Question[0]
	name := canonical(q.Name)

	s.mu.Lock()
	s.counts[qkey{name, q.Qtype}]++
	s.total++
	f := s.faults[name]
	data := s.data
	s.mu.Unlock()

	if f.Drop {
		return
	}
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-s.done:
			t.Stop()
			return
		}
	}

	m.SetReply(req)
	m.Authoritative = true
	if f.Rcode != 0 {
		m.Rcode = f.Rcode
	} else {
		m.Rcode, m.Answer, m.Ns = data.answer(name, q.Qtype)
	}

	size := dns.MinMsgSize
	opt := req.IsEdns0()
	if opt != nil {
		m.SetEdns0(dns.DefaultMsgSize, false)
		size = max(size, int(opt.UDPSize()))
	}
	if w.LocalAddr().Network() == "udp" {
		if f.Truncate {
			m.Answer, m.Ns = nil, nil
			m.Truncated = true
		}
		m.Truncate(size) // sets TC when records had to go
	}
	w.WriteMsg(m)
}
