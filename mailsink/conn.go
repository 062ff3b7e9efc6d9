package mailsink

import (
	"bufio"
	"errors"
	"io"
	"maps"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// Postfix-style default replies.
const (
	replyOK          = "250 2.0.0 Ok"
	replyQueued      = "250 2.0.0 Ok: queued as "
	replyMailOK      = "250 2.1.0 Ok"
	replyRcptOK      = "250 2.1.5 Ok"
	replyData        = "354 End data with <CR><LF>.<CR><LF>"
	replyBye         = "221 2.0.0 Bye"
	replyUnknown     = "502 5.5.2 Error: command not recognized"
	replyBadSyntax   = "500 5.5.2 Error: bad syntax"
	replyTooLong     = "500 5.5.0 Error: line too long"
	replyNeedMail    = "503 5.5.1 Error: need MAIL command"
	replyNeedRcpt    = "503 5.5.1 Error: need RCPT command"
	replyNested      = "503 5.5.1 Error: nested MAIL command"
	replyInTx        = "503 5.5.1 Error: MAIL transaction in progress"
	replyMailSyntax  = "501 5.5.4 Syntax: MAIL FROM:<address>"
	replyRcptSyntax  = "501 5.5.4 Syntax: RCPT TO:<address>"
	replyBadRcpt     = "501 5.1.3 Bad recipient address syntax"
	replyEhloSyntax  = "501 5.5.4 Syntax: EHLO hostname"
	replyHeloSyntax  = "501 5.5.4 Syntax: HELO hostname"
	replyTooBig      = "552 5.3.4 Message size exceeds fixed limit"
	replyBadSize     = "501 5.5.4 Bad message size syntax"
	replyBadBody     = "501 5.5.4 Unsupported BODY parameter value"
	replyNoXclient   = "550 5.7.0 Error: insufficient authorization"
	replyXclientSyn  = "501 5.5.4 Syntax: XCLIENT attribute=value..."
	replyXclientVal  = "501 5.5.4 Bad XCLIENT attribute value syntax"
	replyWriteError  = "451 4.3.0 Error: queue file write error"
	replyUnsupported = "555 5.5.4 Unsupported option: "
)

// xclientAttrs are the XCLIENT attributes Postfix accepts (and advertises).
var xclientAttrs = []string{"NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT", "REVERSE_NAME"}

var errLineTooLong = errors.New("line too long")

// conn is the state of one connection. It is also the io.Reader and
// io.Writer under the bufio pair: every network read and write gets a fresh
// deadline, and pending replies are flushed before the server blocks for
// more input (so pipelined replies go out together, as with Postfix).
type conn struct {
	s    *Server
	nc   net.Conn
	si   *SessionInfo
	r    *bufio.Reader
	w    *bufio.Writer
	line []byte // long command lines are assembled here
	data []byte // message content is assembled here
	helo string
}

var connPool = sync.Pool{New: func() any {
	c := new(conn)
	c.r = bufio.NewReaderSize(c, 8<<10)
	c.w = bufio.NewWriterSize(c, 4<<10)
	return c
}}

// Read implements io.Reader for the bufio.Reader.
func (c *conn) Read(p []byte) (int, error) {
	if c.w.Buffered() > 0 {
		if err := c.w.Flush(); err != nil {
			return 0, err
		}
	}
	if err := c.nc.SetReadDeadline(time.Now().Add(c.s.timeout)); err != nil {
		return 0, err
	}
	return c.nc.Read(p)
}

// Write implements io.Writer for the bufio.Writer.
func (c *conn) Write(p []byte) (int, error) {
	if err := c.nc.SetWriteDeadline(time.Now().Add(c.s.timeout)); err != nil {
		return 0, err
	}
	return c.nc.Write(p)
}

func (s *Server) serve(nc net.Conn, si *SessionInfo) {
	c := connPool.Get().(*conn)
	c.s, c.nc, c.si = s, nc, si
	c.r.Reset(c)
	c.w.Reset(c)
	defer func() {
		nc.Close()
		s.mu.Lock()
		delete(s.conns, nc)
		si.Ended = time.Now()
		s.mu.Unlock()
		s.logf("mailsink: [%d] closed", si.ID)
		c.release()
		s.wg.Done()
	}()
	s.logf("mailsink: [%d] connection from %s", si.ID, si.RemoteAddr)
	if err := c.run(); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		s.logf("mailsink: [%d] %v", si.ID, err)
	}
}

func (c *conn) release() {
	c.s, c.nc, c.si, c.helo = nil, nil, nil, ""
	c.r.Reset(c)
	c.w.Reset(c)
	if cap(c.line) > 16<<10 {
		c.line = nil
	}
	if cap(c.data) > 1<<20 {
		c.data = nil
	}
	connPool.Put(c)
}

// run speaks SMTP until the session ends; the caller closes the connection.
func (c *conn) run() error {
	s := c.s
	if s.Proxy == ProxyRequired {
		h, err := proxyproto.Read(c.r)
		if err != nil {
			return err // no greeting, just hang up
		}
		s.mu.Lock()
		c.si.Proxy = h
		c.si.ProxySource = h.SourceAddr
		s.mu.Unlock()
		s.logf("mailsink: [%d] PROXY v%d %v -> %v", c.si.ID, h.Version, h.SourceAddr, h.DestinationAddr)
	}
	c.reply(s.greeting)
	for {
		line, err := c.readLine()
		if err != nil {
			switch {
			case errors.Is(err, errLineTooLong):
				c.recordCommand("<line too long>")
				c.reply(replyTooLong)
				c.goodbye()
			case isTimeout(err):
				c.reply("421 4.4.2 " + s.host + " Error: timeout exceeded")
				c.goodbye()
			}
			return err
		}
		nx, err := c.command(line)
		switch nx {
		case hangUp:
			if err == nil {
				c.w.Flush() // replies already queued go out; then die
			}
			return err
		case goodbye:
			c.goodbye()
			return err
		}
	}
}

// lingerTime bounds how long goodbye drains the client's input.
const lingerTime = 500 * time.Millisecond

// goodbye ends the session gracefully: the queued replies are flushed and the
// write side shut down (the client sees them, then EOF), and input still
// arriving is drained for a moment before the caller closes the connection,
// so that closing with unread input does not reset the connection and
// destroy the replies in flight (as net/http does).
func (c *conn) goodbye() {
	if err := c.w.Flush(); err != nil {
		return
	}
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() != nil {
			return
		}
	}
	c.nc.SetReadDeadline(time.Now().Add(lingerTime))
	io.Copy(io.Discard, io.LimitReader(c.nc, 4<<20))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readLine returns the next command line without its line ending (CRLF or a
// bare LF). The slice is valid until the next read.
func (c *conn) readLine() ([]byte, error) {
	frag, err := c.r.ReadSlice('\n')
	if err == nil {
		line := trimEOL(frag)
		if len(line) > MaxLineLength {
			return nil, errLineTooLong
		}
		return line, nil
	}
	if err != bufio.ErrBufferFull {
		return nil, err
	}
	c.line = append(c.line[:0], frag...)
	for {
		if len(c.line) > MaxLineLength+1 { // +1: a CR may still be followed by LF
			return nil, errLineTooLong
		}
		frag, err = c.r.ReadSlice('\n')
		c.line = append(c.line, frag...)
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			return nil, err
		}
	}
	line := trimEOL(c.line)
	if len(line) > MaxLineLength {
		return nil, errLineTooLong
	}
	return line, nil
}

func trimEOL(b []byte) []byte {
	b = b[:len(b)-1] // '\n'
	if len(b) > 0 && b[len(b)-1] == '\r' {
		b = b[:len(b)-1]
	}
	return b
}

// lineString converts a command line to a string, without allocating for
// the common argument-less commands.
func lineString(line []byte) string {
	if len(line) == 4 {
		switch string(line) {
		case "DATA":
			return "DATA"
		case "RSET":
			return "RSET"
		case "NOOP":
			return "NOOP"
		case "QUIT":
			return "QUIT"
		}
	}
	return string(line)
}

func (c *conn) recordCommand(cmd string) {
	s := c.s
	s.mu.Lock()
	if len(c.si.Commands) < MaxLogEntries {
		c.si.Commands = append(c.si.Commands, cmd)
	} else {
		c.si.Dropped++
	}
	s.mu.Unlock()
	if s.Logf != nil { // checked here: boxing the arguments allocates
		s.Logf("mailsink: [%d] C: %s", c.si.ID, cmd)
	}
}

// reply queues a reply; text may hold several lines separated by "\n".
func (c *conn) reply(text string) {
	text = strings.TrimRight(text, "\r\n")
	s := c.s
	s.mu.Lock()
	if len(c.si.Replies) < MaxLogEntries {
		c.si.Replies = append(c.si.Replies, text)
	} else {
		c.si.Dropped++
	}
	s.mu.Unlock()
	if s.Logf != nil {
		s.Logf("mailsink: [%d] S: %s", c.si.ID, text)
	}
	for {
		i := strings.IndexByte(text, '\n')
		if i < 0 {
			c.w.WriteString(text)
			c.w.WriteString("\r\n")
			return
		}
		c.w.WriteString(strings.TrimSuffix(text[:i], "\r"))
		c.w.WriteString("\r\n")
		text = text[i+1:]
	}
}

// sleep waits d, returning false if the server is closed meanwhile.
func (c *conn) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.s.done:
		return false
	}
}

// next says how the session goes on after a command.
type next int

const (
	proceed next = iota // read the next command
	hangUp              // close now, like a crashing server (pending replies are flushed)
	goodbye             // the reply is the last: flush, half-close, drain, close
)

// command handles one command line and says what comes next; err is set
// when the connection failed.
func (c *conn) command(line []byte) (next, error) {
	raw := lineString(line)
	c.recordCommand(raw)
	verb, args, _ := strings.Cut(raw, " ")
	args = strings.TrimLeft(args, " ")
	var up [12]byte
	if len(verb) > len(up) {
		c.reply(replyUnknown)
		return proceed, nil
	}
	for i := 0; i < len(verb); i++ {
		b := verb[i]
		if 'a' <= b && b <= 'z' {
			b -= 'a' - 'A'
		}
		up[i] = b
	}
	switch string(up[:len(verb)]) {
	case "EHLO", "HELO":
		c.hello(string(up[:len(verb)]) == "EHLO", args)
	case "XCLIENT":
		c.xclient(args)
	case "MAIL":
		return c.mail(args)
	case "RCPT":
		return c.rcpt(args)
	case "DATA", "RSET", "QUIT":
		if args != "" {
			c.reply("501 5.5.4 Syntax: " + string(up[:len(verb)]))
			return proceed, nil
		}
		switch string(up[:len(verb)]) {
		case "DATA":
			return c.dataCmd()
		case "RSET":
			c.resetTx()
			c.reply(replyOK)
		case "QUIT":
			c.reply(replyBye)
			return goodbye, nil
		}
	case "NOOP":
		c.reply(replyOK)
	case "":
		c.reply(replyBadSyntax)
	default:
		c.reply(replyUnknown)
	}
	return proceed, nil
}

func (c *conn) resetTx() {
	si := c.si
	if !si.InTransaction {
		return
	}
	c.s.mu.Lock()
	si.InTransaction = false
	si.From, si.MailParams = "", ""
	si.To, si.RcptParams = nil, nil
	c.s.mu.Unlock()
}

func (c *conn) hello(ehlo bool, args string) {
	name := strings.TrimRight(args, " ")
	if name == "" {
		if ehlo {
			c.reply(replyEhloSyntax)
		} else {
			c.reply(replyHeloSyntax)
		}
		return
	}
	c.resetTx()
	c.helo = name
	c.s.mu.Lock()
	c.si.Helo = append(c.si.Helo, name)
	c.s.mu.Unlock()
	if ehlo {
		c.reply(c.s.ehloReply)
	} else {
		c.reply(c.s.heloReply)
	}
}

func (c *conn) xclient(args string) {
	if !c.s.XCLIENT {
		c.reply(replyNoXclient)
		return
	}
	if c.si.InTransaction {
		c.reply(replyInTx)
		return
	}
	if strings.TrimSpace(args) == "" {
		c.reply(replyXclientSyn)
		return
	}
	attrs := maps.Clone(c.si.XCLIENT)
	if attrs == nil {
		attrs = make(map[string]string)
	}
	for f := range strings.FieldsSeq(args) {
		name, val, ok := strings.Cut(f, "=")
		if !ok || name == "" {
			c.reply(replyXclientSyn)
			return
		}
		name = strings.ToUpper(name)
		if !knownXclientAttr(name) {
			c.reply("501 5.5.4 Bad XCLIENT attribute name: " + name)
			return
		}
		dec, ok := decodeXtext(val)
		if !ok {
			c.reply(replyXclientVal)
			return
		}
		attrs[name] = dec
	}
	// Like Postfix, XCLIENT starts a new session: the client is expected to
	// send EHLO again; until then the HELO attribute (if any) is the name.
	c.helo = attrs["HELO"]
	c.s.mu.Lock()
	c.si.XCLIENT = attrs
	c.s.mu.Unlock()
	c.reply(c.s.greeting)
}

func knownXclientAttr(name string) bool {
	for _, a := range xclientAttrs {
		if a == name {
			return true
		}
	}
	return false
}

// decodeXtext decodes RFC 3461 xtext ("+" followed by two hex digits).
func decodeXtext(s string) (string, bool) {
	i := strings.IndexByte(s, '+')
	if i < 0 {
		return s, true
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch != '+' {
			b = append(b, ch)
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return string(b), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// parsePath parses `<address> params` after "FROM:" or "TO:". Like Postfix
// (strict_rfc821_envelopes=no) it tolerates spaces after the colon and an
// address without angle brackets.
func parsePath(s string) (addr, params string, ok bool) {
	s = strings.TrimLeft(s, " ")
	if s == "" {
		return "", "", false
	}
	if s[0] != '<' {
		addr, params, _ = strings.Cut(s, " ")
		return addr, strings.Trim(params, " "), true
	}
	quoted := false
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if quoted {
				i++
			}
		case '"':
			quoted = !quoted
		case '>':
			if quoted {
				continue
			}
			rest := s[i+1:]
			if rest != "" && rest[0] != ' ' {
				return "", "", false
			}
			return s[1:i], strings.Trim(rest, " "), true
		}
	}
	return "", "", false
}

// checkParams validates MAIL (rcpt=false) or RCPT parameters against the
// advertised extensions. It returns the SIZE value (-1 if absent) and an
// error reply, "" if the parameters are acceptable.
func (c *conn) checkParams(params string, rcpt bool) (size int64, errReply string) {
	s := c.s
	size = -1
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, " ")
		if p == "" {
			continue
		}
		kw, val, _ := strings.Cut(p, "=")
		ok := false
		if rcpt {
			ok = s.extDSN && (strings.EqualFold(kw, "NOTIFY") || strings.EqualFold(kw, "ORCPT"))
		} else {
			switch {
			case strings.EqualFold(kw, "SIZE") && s.extSize:
				n, err := strconv.ParseInt(val, 10, 64)
				if err != nil || n < 0 {
					return -1, replyBadSize
				}
				size, ok = n, true
			case strings.EqualFold(kw, "BODY") && s.ext8bit:
				if !strings.EqualFold(val, "7BIT") && !strings.EqualFold(val, "8BITMIME") &&
					!(s.extBinMIME && strings.EqualFold(val, "BINARYMIME")) {
					return -1, replyBadBody
				}
				ok = true
			case strings.EqualFold(kw, "SMTPUTF8"):
				ok = s.extUTF8
			case strings.EqualFold(kw, "RET"), strings.EqualFold(kw, "ENVID"):
				ok = s.extDSN
			case strings.EqualFold(kw, "AUTH"):
				ok = s.extAuth
			}
		}
		if !ok {
			return -1, replyUnsupported + kw
		}
	}
	return size, ""
}

func (c *conn) mail(args string) (next, error) {
	si := c.si
	if si.InTransaction {
		c.reply(replyNested)
		return proceed, nil
	}
	if len(args) < 5 || !strings.EqualFold(args[:5], "FROM:") {
		c.reply(replyMailSyntax)
		return proceed, nil
	}
	from, params, ok := parsePath(args[5:])
	if !ok {
		c.reply(replyMailSyntax)
		return proceed, nil
	}
	size, bad := c.checkParams(params, false)
	if bad != "" {
		c.reply(bad)
		return proceed, nil
	}
	if c.s.MaxSize > 0 && size > c.s.MaxSize {
		c.reply(replyTooBig)
		return proceed, nil
	}
	var a *Action
	if c.s.Policy != nil {
		a = c.s.Policy.Mail(si, from)
	}
	reply, more := c.act(a, replyMailOK)
	if !more {
		return hangUp, nil
	}
	if reply[0] == '2' {
		c.s.mu.Lock()
		si.InTransaction = true
		si.From, si.MailParams = from, params
		c.s.mu.Unlock()
	}
	c.reply(reply)
	return c.after(a)
}

func (c *conn) rcpt(args string) (next, error) {
	si := c.si
	if !si.InTransaction {
		c.reply(replyNeedMail)
		return proceed, nil
	}
	if len(args) < 3 || !strings.EqualFold(args[:3], "TO:") {
		c.reply(replyRcptSyntax)
		return proceed, nil
	}
	to, params, ok := parsePath(args[3:])
	if !ok {
		c.reply(replyRcptSyntax)
		return proceed, nil
	}
	if to == "" {
		c.reply(replyBadRcpt)
		return proceed, nil
	}
	if _, bad := c.checkParams(params, true); bad != "" {
		c.reply(bad)
		return proceed, nil
	}
	var a *Action
	if c.s.Policy != nil {
		a = c.s.Policy.Rcpt(si, to)
	}
	reply, more := c.act(a, replyRcptOK)
	if !more {
		return hangUp, nil
	}
	if reply[0] == '2' {
		c.s.mu.Lock()
		si.To = append(si.To, to)
		si.RcptParams = append(si.RcptParams, params)
		c.s.mu.Unlock()
	}
	c.reply(reply)
	return c.after(a)
}

// act applies the parts of an Action that come before the reply: the delay
// and a hang-up. It returns the reply to send, or false to end the session.
func (c *conn) act(a *Action, def string) (string, bool) {
	if a == nil {
		return def, true
	}
	if !c.sleep(a.Delay) || a.Close {
		return "", false
	}
	if strings.TrimRight(a.Reply, "\r\n") != "" {
		return a.Reply, true
	}
	return def, true
}

// after applies CloseAfter once the reply is queued.
func (c *conn) after(a *Action) (next, error) {
	if a != nil && a.CloseAfter {
		return goodbye, nil
	}
	return proceed, nil
}

func (c *conn) dataCmd() (next, error) {
	s, si := c.s, c.si
	if !si.InTransaction {
		c.reply(replyNeedMail)
		return proceed, nil
	}
	if len(si.To) == 0 {
		c.reply(replyNeedRcpt)
		return proceed, nil
	}
	var a *Action
	if s.Policy != nil {
		a = s.Policy.DataStart(si)
	}
	reply, more := c.act(a, replyData)
	if !more {
		return hangUp, nil
	}
	c.reply(reply)
	if a != nil && a.CutMidData {
		// Take a few bytes of the message (ReadByte flushes the 354
		// first), then die.
		if _, err := c.r.ReadByte(); err != nil {
			return hangUp, err
		}
		c.r.Discard(min(c.r.Buffered(), 64))
		s.logf("mailsink: [%d] cut mid-DATA", si.ID)
		return hangUp, nil
	}
	if reply[0] != '3' {
		return c.after(a)
	}
	if a != nil && a.CloseAfter {
		return goodbye, nil
	}

	data, tooBig, err := readData(c.r, c.data[:0], s.MaxSize)
	c.data = data
	if err != nil {
		if isTimeout(err) {
			c.reply("421 4.4.2 " + s.host + " Error: timeout exceeded")
			return goodbye, err
		}
		return hangUp, err
	}
	if s.Logf != nil {
		s.Logf("mailsink: [%d] C: <%d bytes of data>", si.ID, len(data))
	}
	if tooBig {
		c.resetTx()
		c.reply(replyTooBig)
		return proceed, nil
	}

	// The default reply and the ID share one allocation.
	var idBuf [64]byte
	queued := string(appendID(append(idBuf[:0], replyQueued...)))
	m := &Message{
		ID:          queued[len(replyQueued):],
		Helo:        c.helo,
		From:        si.From,
		MailParams:  si.MailParams,
		To:          si.To,
		RcptParams:  si.RcptParams,
		Data:        append(make([]byte, 0, len(data)), data...),
		XCLIENT:     maps.Clone(si.XCLIENT),
		ProxySource: si.ProxySource,
		Received:    time.Now(),
		Session:     si.ID,
	}
	a = nil
	if s.Policy != nil {
		a = s.Policy.DataEnd(si, m)
	}
	reply = ""
	store := true
	if a != nil {
		if !c.sleep(a.Delay) {
			return hangUp, nil
		}
		if strings.TrimRight(a.Reply, "\r\n") != "" {
			reply = a.Reply
			store = reply[0] == '2'
		}
		if a.Close {
			store = false
		}
		if a.Store != nil {
			store = *a.Store
		}
	}
	if store {
		if err := s.store(si, m); err != nil {
			s.logf("mailsink: [%d] storing %s: %v", si.ID, m.ID, err)
			reply = replyWriteError
		}
	}
	c.resetTx() // si.To now belongs to m
	if a != nil && a.Close {
		return hangUp, nil
	}
	if reply == "" {
		reply = queued
	}
	c.reply(reply)
	return c.after(a)
}
