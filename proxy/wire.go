package proxy

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/proxy/backend"
	"github.com/mxguard/mxguard/rules"
)

// wire is what crosses a client's socket, between it and go-smtp.
//
// Input: command lines are taken one at a time, in step with go-smtp's
// replies, and judged before go-smtp parses them (the command-stage checks,
// the line length, STARTTLS); a message passes through unjudged. Output:
// go-smtp's replies are held back until it next reads, and watched: a
// refusal go-smtp makes on its own (a protocol error, a limit) is logged
// like any other, and 354 starts a message.
//
// STARTTLS is done here, not by go-smtp, so that everything above stays
// plaintext to the wire and one go-smtp session lasts the whole connection.
type wire struct {
	c   *conn
	src io.Reader // the socket, then the TLS layer
	dst io.Writer

	tlsConn *tls.Conn // after STARTTLS
	tls     bool
	// needHELO: after STARTTLS the client must say EHLO again before a
	// transaction (RFC 3207 §4.2).
	needHELO bool

	buf     []byte // input read, not yet handed to go-smtp; nil when empty
	aliased bool   // buf lies in go-smtp's own buffer (the read it came in)
	ready   int    // buf[:ready] is judged and may go to go-smtp
	before  int    // buf's first bytes that arrived before the last reply was sent
	mode    int
	bdat    int64 // bytes of a BDAT chunk still to pass
	// data: where a message's lines stand, to see its end.
	lineStart, lastCR, dot, dotCR bool

	// Lockstep: commands judged and final replies sent, the banner being
	// the reply to the connection itself.
	cmds, answered int
	cmd            command // the command being answered
	argBuf         []byte  // cmd.arg's bytes
	tagged         bool    // the next final reply is one mxguard made
	swallow        int     // go-smtp replies to drop (to commands mxguard injected)
	// accepted: the backend's reply to the MAIL or RCPT being answered,
	// sent in place of go-smtp's own 250 text (which names go-smtp).
	accepted *backend.Reply

	out       []byte // replies held back
	readTimed error  // a read hit its deadline: every later read fails at once
	// bannerSent: mxguard sent the banner (afterBanner); go-smtp's own,
	// its first reply, is counted but not sent.
	bannerSent bool
	closed     bool   // mxguard hung up: what go-smtp still writes goes nowhere
	over       string // a limit the client went past: cut it off at the next read
}

const (
	modeCommand = iota
	modeData
	modeBDAT
)

// command is a command line as far as the replies to it need.
type command struct {
	verb string // upper case
	arg  []byte // what follows the verb and a space: wire's own buffer, until the next command
}

func (w *wire) init(c *conn) {
	w.c, w.src, w.dst = c, c.Conn, c.Conn
	w.cmds = 1 // the connection, answered by the banner
	w.lineStart = true
}

// maxPending bounds what write holds back.
const maxPending = 16 << 10

// errDropped ends go-smtp's reading after mxguard hung up.
var errDropped = net.ErrClosed

// read gives go-smtp judged input.
//
// The replies go-smtp wrote are sent only when the client's next input is
// not here yet, just before waiting for it (Postfix's rule): the replies to
// pipelined commands (MAIL, RCPT, DATA) leave in one write, and the client
// reads them in one.
func (w *wire) read(p []byte) (int, error) {
	w.answeredAll()
	if w.over != "" {
		return 0, w.cutOff()
	}
	for w.ready == 0 {
		w.answeredAll() // what mxguard answered itself
		switch {
		case len(w.buf) == 0:
			if err := w.flush(); err != nil {
				return 0, err
			}
			// Straight into go-smtp's buffer: an idle connection holds no
			// buffer of ours.
			n, err := w.readSrc(p)
			if n == 0 {
				return 0, err
			}
			w.buf, w.aliased = p[:n], true
		case w.mode == modeCommand && bytes.IndexByte(w.buf, '\n') < 0:
			if err := w.flush(); err != nil {
				return 0, err
			}
			if err := w.fill(); err != nil {
				return 0, err
			}
		}
		if err := w.process(); err != nil {
			return 0, err
		}
	}
	n := copy(p, w.buf[:w.ready]) // a forward copy when buf is p: memmove
	w.ready -= n
	w.before = max(w.before-n, 0)
	w.buf = w.buf[n:]
	switch {
	case len(w.buf) == 0:
		w.buf, w.aliased = nil, false
	case w.aliased:
		// The rest lies in go-smtp's buffer, which it is about to reuse.
		w.buf, w.aliased = bytes.Clone(w.buf), false
	}
	return n, nil
}

// fill reads more input after what buf holds: a command line's rest.
func (w *wire) fill() error {
	if w.aliased || cap(w.buf)-len(w.buf) < 512 {
		w.buf = append(make([]byte, 0, 2*len(w.buf)+1024), w.buf...)
		w.aliased = false
	}
	n, err := w.readSrc(w.buf[len(w.buf):cap(w.buf)])
	w.buf = w.buf[:len(w.buf)+n]
	if n > 0 {
		return nil // an error comes back on the next read
	}
	return err
}

// readSrc reads from the client.
func (w *wire) readSrc(p []byte) (int, error) {
	if w.readTimed != nil {
		return 0, w.readTimed // the same net.Error: go-smtp answers "421 4.4.2 Idle timeout"
	}
	n, err := 0, error(nil)
	if w.c.cut.Load() {
		// Cut before go-smtp came to read (while parked after the
		// banner, say): go-smtp set its own deadline since.
		err = errDropped
	} else {
		n, err = w.src.Read(p)
	}
	if err != nil && w.c.cut.Load() {
		// Shed to make room, or cut by shutdown or session_timeout.
		if w.c.shedding.Load() {
			w.c.shed(checks.AtCommand)
		} else {
			w.c.Close()
		}
		return 0, errDropped
	}
	if err != nil && deadlineExceeded(err) {
		// go-smtp would otherwise go back to reading commands, and the rest
		// of a message cut off by data_timeout would run as SMTP commands
		// (a smuggling path), or a half-sent line would be taken whole.
		w.readTimed = err
	}
	return n, err
}

// process judges what it can of buf: the next command line (only when
// go-smtp has answered every earlier one, so that mxguard's own replies
// keep their place), or message bytes.
func (w *wire) process() error {
	switch w.mode {
	case modeData:
		w.ready = w.scanData(w.buf)
		return nil
	case modeBDAT:
		n := int(min(int64(len(w.buf)), w.bdat))
		w.bdat -= int64(n)
		if w.bdat == 0 {
			w.mode = modeCommand
		}
		w.ready = n
		return nil
	}
	// go-smtp reads only once it has answered every command so far; the
	// counts agree unless a command got no reply at all, and then there is
	// nothing to wait for.
	w.answered = max(w.answered, w.cmds)
	i := bytes.IndexByte(w.buf, '\n')
	limit := w.c.rt.Cfg.Limits.MaxLineLength
	if i < 0 {
		if len(w.buf) > limit {
			return w.refuseLine(checks.AtCommand, "limit", fmt.Sprintf("a command line longer than %d bytes (limits.max_line_length)", limit),
				fmt.Sprintf("500 5.5.2 Command line longer than %d bytes", limit))
		}
		return nil
	}
	line := w.buf[:i+1]
	if len(line) > limit+2 {
		return w.refuseLine(checks.AtCommand, "limit", fmt.Sprintf("a command line of %d bytes, over %d (limits.max_line_length)", len(line), limit),
			fmt.Sprintf("500 5.5.2 Command line longer than %d bytes", limit))
	}
	pipelined := w.before > 0
	w.cmds++
	w.c.active.Store(time.Now().UnixNano())
	if bytes.IndexByte(line, 0) >= 0 {
		if w.c.rt.Cfg.Limits.NULBytes == config.NULRemove {
			// Dropped, and the line judged as what is left.
			clean := bytes.ReplaceAll(line, []byte{0}, nil)
			w.c.srv.log.Info("NUL removed", "session", w.c.id, "client", clientString(w.c.client),
				"stage", "command", "text", checks.Escape(line, 100))
			w.buf, w.aliased = append(clean, w.buf[len(line):]...), false
			line = w.buf[:len(clean)]
		} else {
			w.buf = w.buf[len(line):]
			w.before = max(w.before-len(line), 0)
			w.c.refuse(rules.Refusal(checks.AtCommand, protocolCheck, "protocol",
				"a NUL byte in a command line: "+checks.Escape(line, 100),
				rules.Reply{Code: 500, Enhanced: "5.5.2", Text: "NUL character in command"}, false), "", "")
			w.sendOwn("500 5.5.2 NUL character in command")
			return nil
		}
	}
	next, err := w.judge(line, pipelined)
	if err != nil {
		return err
	}
	if next == pass {
		w.ready = len(line)
		return nil
	}
	w.buf = w.buf[len(line):]
	w.before = max(w.before-len(line), 0)
	if next == starttls {
		return w.startTLS()
	}
	return nil
}

// What becomes of a command line.
const (
	pass     = iota // go-smtp gets it
	answered        // mxguard answered it
	starttls        // mxguard starts TLS
)

// judge decides on one command line: go-smtp gets it, or mxguard answers it
// itself.
func (w *wire) judge(line []byte, pipelined bool) (int, error) {
	c := w.c
	text := bytes.TrimRight(line, "\r\n")
	verb, arg, _ := bytes.Cut(text, []byte(" "))
	w.argBuf = append(w.argBuf[:0], arg...)
	w.cmd = command{verb: upperVerb(verb), arg: w.argBuf}
	w.accepted = nil // it was for the command before
	d, decided := c.pipe.Command(c.context(), line, pipelined)
	if decided {
		c.logWould(d)
		if d.Refuse {
			c.refuse(d, "", "")
			if d.Action == rules.Drop {
				c.dropWith(d.Reply.String())
				return answered, errDropped
			}
			w.sendOwn(d.Reply.String())
			return answered, nil
		}
	}
	if err := w.countJunk(); err != nil {
		return answered, err
	}
	switch w.cmd.verb {
	case "STARTTLS":
		if c.rt.TLS != nil && !w.tls && len(arg) == 0 {
			return starttls, nil
		}
	case "HELO", "EHLO":
		w.needHELO = false
	case "MAIL", "RCPT", "DATA", "BDAT":
		if w.needHELO {
			w.sendOwn("503 5.5.1 Send EHLO first after STARTTLS")
			return answered, nil
		}
		if w.cmd.verb == "BDAT" {
			if n, err := strconv.ParseInt(strings.Fields(string(arg) + " x")[0], 10, 64); err == nil && n > 0 {
				w.mode, w.bdat = modeBDAT, n
			}
		}
	}
	return pass, nil
}

// The commands go-smtp knows, and those that are junk: they do nothing
// (smtpd_junk_command_limit).
var (
	knownVerbs = map[string]bool{"HELO": true, "EHLO": true, "MAIL": true, "RCPT": true, "DATA": true, "BDAT": true,
		"RSET": true, "NOOP": true, "QUIT": true, "VRFY": true, "EXPN": true, "HELP": true, "STARTTLS": true, "AUTH": true,
		"SEND": true, "SOML": true, "SAML": true, "TURN": true}
	junkVerbs = map[string]bool{"NOOP": true, "RSET": true, "VRFY": true, "EXPN": true, "HELP": true}
	// verbNames gives the known verbs as strings without allocating one
	// per command line.
	verbNames = func() map[string]string {
		m := make(map[string]string, len(knownVerbs))
		for v := range knownVerbs {
			m[v] = v
		}
		return m
	}()
)

// upperVerb is strings.ToUpper(string(verb)), without an allocation for
// the verbs go-smtp knows.
func upperVerb(verb []byte) string {
	var u [16]byte
	if len(verb) <= len(u) {
		for i, ch := range verb {
			if ch >= 0x80 {
				return strings.ToUpper(string(verb))
			}
			if 'a' <= ch && ch <= 'z' {
				ch -= 'a' - 'A'
			}
			u[i] = ch
		}
		if v, ok := verbNames[string(u[:len(verb)])]; ok {
			return v
		}
	}
	return strings.ToUpper(string(verb))
}

// countJunk counts junk and unknown commands against their limits: past
// the junk limit each one counts as an error; past the unknown-command or
// the error limit, the client is cut off.
func (w *wire) countJunk() error {
	c := w.c
	lim := c.srv.limitsNow(c.rt.Cfg)
	switch {
	case junkVerbs[w.cmd.verb]:
		if c.junk++; c.junk > lim.junkLimit {
			c.errors++
		}
	case !knownVerbs[w.cmd.verb]:
		if c.unknown++; c.unknown > lim.unknownLimit {
			w.over = fmt.Sprintf("too many unknown commands (%d; limits.unknown_command_limit %d)", c.unknown, lim.unknownLimit)
		}
	}
	if w.over == "" && c.errors > lim.errorLimit {
		w.over = fmt.Sprintf("too many errors (%d; limits.hard_error_limit %d)", c.errors, lim.errorLimit)
	}
	if w.over != "" {
		return w.cutOff()
	}
	return nil
}

// cutOff ends the session of a client past a junk or error limit.
func (w *wire) cutOff() error {
	c := w.c
	why := w.over
	w.over = ""
	reply := rules.Reply{Code: 421, Enhanced: "4.7.0", Text: c.rt.Cfg.Hostname + " Error: " + strings.Split(why, " (")[0]}
	c.refuse(rules.Refusal(checks.AtCommand, limitCheck, "limit", why, reply, true), c.from, "")
	c.dropWith(reply.String())
	return errDropped
}

// refuseLine refuses a command line mxguard cannot take whole, and hangs up.
func (w *wire) refuseLine(at checks.Stage, rule, reason, reply string) error {
	r, _ := rules.ParseReply(reply)
	w.c.refuse(rules.Refusal(at, limitCheck, rule, reason, r, true), "", "")
	w.c.dropWith(reply)
	return errDropped
}

// startTLS answers STARTTLS and runs the handshake. Input the client sent
// after the command is discarded unread: it was sent in the clear and must
// not be taken as sent under TLS (the STARTTLS command injection flaw).
func (w *wire) startTLS() error {
	c := w.c
	w.sendOwn("220 2.0.0 Ready to start TLS")
	if err := w.flush(); err != nil {
		return err
	}
	if len(w.buf) > 0 {
		c.srv.log.Warn("input after STARTTLS discarded", "session", c.id, "client", clientString(c.client),
			"bytes", len(w.buf), "text", checks.Escape(w.buf, 100))
	}
	w.buf, w.before = nil, 0
	tc := tls.Server(c.Conn, c.rt.TLS)
	c.Conn.SetDeadline(time.Now().Add(c.rt.Cfg.Limits.CommandTimeout.D()))
	err := tc.Handshake()
	c.Conn.SetDeadline(time.Time{})
	if err != nil {
		c.srv.log.Info("TLS handshake failed", "session", c.id, "client", clientString(c.client), "err", err.Error())
		c.hangup = "starttls"
		c.Close()
		return errDropped
	}
	w.tlsConn, w.tls, w.src, w.dst, w.needHELO = tc, true, tc, tc, true
	// go-smtp knows nothing of it: a RSET it does not answer out loud
	// clears the transaction, as RFC 3207 wants.
	w.buf = append(w.buf, "RSET\r\n"...)
	w.ready, w.swallow = len(w.buf), w.swallow+1
	w.cmds++
	return nil
}

// scanData passes message bytes on, watching for the line that ends the
// message (".", after a CRLF) so that command lines after it are judged
// again. It returns how many bytes belong to the message.
func (w *wire) scanData(b []byte) int {
	for i, ch := range b {
		switch {
		case ch == '\n':
			if w.dotCR {
				w.mode, w.lineStart, w.dot, w.dotCR = modeCommand, true, false, false
				return i + 1
			}
			w.lineStart, w.dot, w.dotCR = w.lastCR, false, false
		case w.lineStart && ch == '.':
			w.dot, w.lineStart = true, false
		case w.dot && ch == '\r':
			w.dot, w.dotCR = false, true
		default:
			w.lineStart, w.dot, w.dotCR = false, false, false
		}
		w.lastCR = ch == '\r'
	}
	return len(b)
}

// write takes go-smtp's output, a line at a time, and watches it: its
// replies are counted, its refusals logged, and STARTTLS added to its EHLO
// reply (go-smtp does not know mxguard offers it).
func (w *wire) write(p []byte) (int, error) {
	for rest := p; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i+1], rest[i+1:]
		} else {
			rest = nil
		}
		if !w.watch(line) {
			continue // the reply to a command mxguard injected
		}
		if w.cmd.verb == "EHLO" && w.c.rt.Cfg.Tests.Pipelining && bytes.Equal(line, []byte("250-PIPELINING\r\n")) {
			continue // the pipelining test: not offered, so a client that pipelines shows itself
		}
		if w.accepted != nil && bytes.HasPrefix(line, []byte("250 ")) {
			w.out = w.accepted.AppendLines(w.out)
			w.accepted = nil
			continue
		}
		w.out = append(w.out, line...)
		if w.cmd.verb == "EHLO" && bytes.HasPrefix(line, []byte("250-Hello ")) && w.c.rt.TLS != nil && !w.tls {
			w.out = append(w.out, "250-STARTTLS\r\n"...)
		}
	}
	if len(w.out) >= maxPending {
		if err := w.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// acceptedAs makes the backend's acceptance the client's reply: go-smtp
// writes its 250 for MAIL and RCPT right after the session accepted, and
// write puts rep in its place, line for line as the backend sent it.
// (DATA's final reply needs none of this: go-smtp sends a Data error
// as it is, and Data returns the backend's reply as one.)
func (w *wire) acceptedAs(rep *backend.Reply) { w.accepted = rep }

// sendOwn queues a reply of mxguard's own.
func (w *wire) sendOwn(reply string) {
	w.tagged = true
	w.write([]byte(reply + "\r\n"))
}

// answeredAll notes that go-smtp has answered what it was given, the
// replies waiting in out: whatever input is buffered now was sent by the
// client before it saw them (it is pipelined), whenever they are sent.
func (w *wire) answeredAll() {
	if len(w.out) > 0 && w.answered > 1 {
		w.before = len(w.buf)
	}
}

// flush sends what write held back.
func (w *wire) flush() error {
	if len(w.out) == 0 {
		return nil
	}
	w.answeredAll()
	_, err := w.dst.Write(w.out)
	if cap(w.out) > maxPending {
		w.out = nil
	} else {
		w.out = w.out[:0]
	}
	return err
}

// watch notes one line of output: a final reply line answers the command,
// 354 starts a message. It reports whether the line goes to the client.
func (w *wire) watch(line []byte) bool {
	if w.closed {
		return false
	}
	if w.bannerSent && w.answered == 0 {
		if len(line) >= 4 && line[3] != '-' {
			w.answered++ // the banner answers the connection
			w.c.bannerTaken()
		}
		return false
	}
	if len(line) < 4 || line[3] == '-' {
		return w.swallow == 0
	}
	code, err := strconv.Atoi(string(line[:3]))
	if err != nil {
		return true
	}
	ours := w.tagged
	w.tagged = false
	if code == 354 {
		w.mode, w.lineStart, w.lastCR = modeData, true, false
		return true // the message follows; its own reply answers DATA
	}
	if w.mode == modeData {
		w.mode = modeCommand // the message ended (or was cut short)
	}
	w.answered++
	if w.swallow > 0 {
		w.swallow--
		return false
	}
	if code >= 400 && !ours {
		w.goSMTPRefused(code, strings.TrimRight(string(line[4:]), "\r\n"))
	}
	if code >= 400 && code != 421 {
		c := w.c
		if c.errors++; w.over == "" && c.errors > c.srv.limitsNow(c.rt.Cfg).errorLimit {
			w.over = fmt.Sprintf("too many errors (%d; limits.hard_error_limit %d)", c.errors, c.srv.limitsNow(c.rt.Cfg).errorLimit)
		}
	}
	return true
}

// goSMTPRefused logs a refusal go-smtp made on its own: a protocol error,
// or one of the limits it enforces for us.
func (w *wire) goSMTPRefused(code int, text string) {
	c := w.c
	reply := rules.Reply{Code: code, Text: text}
	if enh, rest, ok := strings.Cut(text, " "); ok && strings.Count(enh, ".") == 2 {
		reply.Enhanced, reply.Text = enh, rest
	}
	check, rule, key := protocolCheck, "protocol", ""
	switch reply.Enhanced {
	case "5.3.4":
		check, rule, key = limitCheck, "limit", " (limits.max_message_size)"
	case "4.5.3":
		check, rule, key = limitCheck, "limit", " (limits.max_recipients)"
	case "4.4.2":
		check, rule, key = limitCheck, "limit", " (limits.command_timeout)"
	}
	at := checks.AtCommand
	switch w.cmd.verb {
	case "HELO", "EHLO":
		at = checks.AtHELO
	case "MAIL":
		at = checks.AtMail
	case "RCPT":
		at = checks.AtRcpt
	case "DATA", "BDAT":
		at = checks.AtData
	}
	reason := fmt.Sprintf("%s refused by the SMTP layer: %s%s", w.cmd.verb, text, key)
	rcpt := ""
	if at == checks.AtRcpt {
		rcpt = pathArg(string(w.cmd.arg), "TO:")
	}
	c.refuse(rules.Refusal(at, check, rule, reason, reply, false), c.from, rcpt)
}

// pathArg takes the address out of "TO:<a@b> NOTIFY=…".
func pathArg(arg, prefix string) string {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return ""
	}
	a := strings.TrimSpace(arg[len(prefix):])
	if i := strings.IndexByte(a, '>'); strings.HasPrefix(a, "<") && i > 0 {
		return a[1:i]
	}
	return a
}

// Refusals that no check makes, for the log and the memory of clients.
const (
	limitCheck    checks.Name = "limit"
	protocolCheck checks.Name = "protocol"
)
