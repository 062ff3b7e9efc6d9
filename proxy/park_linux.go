//go:build linux

package proxy

import (
	"errors"
	"sync/atomic"
	"syscall"
	"time"
)

var errNoPoller = errors.New("no poller on this system")

// poller watches parked connections' sockets with an epoll instance of its
// own (the Go runtime's netpoller keeps its own registration of them),
// level-triggered, one shot: a socket is registered when its connection
// parks and removed when it wakes, before anyone reads it. The epoll wait
// ends at the earliest deadline; a byte on the kick pipe ends it sooner
// (an earlier deadline, or close).
type poller struct {
	pollerBase
	epfd     int
	kick     [2]int // a pipe
	kicked   atomic.Bool
	stopping atomic.Bool
	done     chan struct{}
}

func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &poller{pollerBase: pollerBase{parked: map[int32]*conn{}}, epfd: epfd, done: make(chan struct{})}
	if err := syscall.Pipe2(p.kick[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return nil, err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: -1}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.kick[0], &ev); err != nil {
		p.closeFDs()
		return nil, err
	}
	go p.run()
	return p, nil
}

// addLocked registers c's socket. Under mu.
func (p *poller) addLocked(c *conn) error {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: c.park.fd, Pad: c.park.gen}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(c.park.fd), &ev); err != nil {
		return err
	}
	p.parked[c.park.fd] = c
	return nil
}

// removeLocked unregisters c's socket. Under mu.
func (p *poller) removeLocked(c *conn) {
	if p.parked[c.park.fd] != c {
		return
	}
	delete(p.parked, c.park.fd)
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(c.park.fd), nil)
}

// kickLocked ends the poller's sleep if it would outlast deadline (mono).
// Under mu.
func (p *poller) kickLocked(deadline int64) {
	if p.waitUntil != 0 && deadline >= p.waitUntil {
		return
	}
	p.waitUntil = deadline // it wakes for this one: no second kick
	if !p.kicked.Swap(true) {
		syscall.Write(p.kick[1], []byte{0})
	}
}

// run wakes the connections whose sockets have something to read and
// those whose deadline passed.
func (p *poller) run() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 128)
	var due []*conn
	var drain [64]byte
	for {
		var wait time.Duration
		due, wait = p.due(due[:0])
		for i, c := range due {
			c.wake(wokeDeadline)
			due[i] = nil
		}
		msec := -1
		if wait >= 0 {
			msec = int((wait + time.Millisecond - 1) / time.Millisecond)
		}
		n, err := syscall.EpollWait(p.epfd, events, msec)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == -1 { // a kick
				syscall.Read(p.kick[0], drain[:])
				p.kicked.Store(false)
				if p.stopping.Load() {
					return
				}
				continue
			}
			p.mu.Lock()
			c := p.parked[ev.Fd]
			if c != nil && c.park.gen != ev.Pad {
				c = nil // an event from before the socket was parked again
			}
			p.mu.Unlock()
			if c != nil {
				c.wake(wokeInput)
			}
		}
	}
}

// close stops the poller; parked connections must have been woken.
func (p *poller) close() {
	p.stopping.Store(true)
	syscall.Write(p.kick[1], []byte{0})
	<-p.done
	p.closeFDs()
}

func (p *poller) closeFDs() {
	syscall.Close(p.kick[0])
	syscall.Close(p.kick[1])
	syscall.Close(p.epfd)
}
