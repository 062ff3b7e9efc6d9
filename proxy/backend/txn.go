package backend

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MailParams are the client's MAIL FROM parameters, decoded (as go-smtp's
// server hands them over). Each is passed on only if the backend advertised
// its extension; SMTPUTF8 is the exception (see Mail).
type MailParams struct {
	Size     int64   // SIZE=, if > 0 and the backend has SIZE
	Body     string  // "", "7BIT" or "8BITMIME": BODY=, if the backend has 8BITMIME
	SMTPUTF8 bool    // SMTPUTF8 (RFC 6531)
	Ret      string  // "", "FULL" or "HDRS": RET=, if the backend has DSN
	EnvID    string  // ENVID=, xtext-encoded here, if the backend has DSN
	Auth     *string // AUTH= (RFC 4954), xtext-encoded, "" as "<>", if the backend has AUTH
}

// RcptParams are the client's RCPT TO parameters, passed on only if the
// backend has DSN.
type RcptParams struct {
	Notify []string // "NEVER", or some of "SUCCESS", "FAILURE", "DELAY"
	// ORcpt is "addr-type;address", the address decoded ("rfc822;a@b.example").
	// It is sent as ORCPT=rfc822;<xtext> (RFC 3461), or for "utf-8" as
	// utf-8-addr-xtext (RFC 6533); other types are dropped.
	ORcpt string
}

// Mail sends MAIL FROM:<from> with the parameters the backend supports.
//
// If p.SMTPUTF8 is set and the backend lacks SMTPUTF8, nothing is sent and a
// *ReplyError with the local reply "553 5.6.7" is returned (RFC 6531: the
// message cannot be relayed without downgrading, which we do not do).
// Arguments that contain CR, LF or NUL, or parameter values that are not
// valid, are refused locally with "501 5.5.4". Both leave the Conn usable.
func (c *Conn) Mail(from string, p MailParams) (*Reply, error) {
	if err := c.ready(); err != nil {
		return nil, err
	}
	if hasCtl(from) {
		return c.refuse(StageMail, "sender address contains CR, LF or NUL")
	}
	b := append(append(append(c.cmd[:0], "MAIL FROM:<"...), from...), '>')
	if p.Size > 0 && c.caps&capSize != 0 {
		b = strconv.AppendInt(append(b, " SIZE="...), p.Size, 10)
	}
	switch {
	case p.Body == "":
	case strings.EqualFold(p.Body, "7BIT"), strings.EqualFold(p.Body, "8BITMIME"):
		if c.caps&cap8BitMIME != 0 {
			b = append(append(b, " BODY="...), strings.ToUpper(p.Body)...)
		}
	default:
		return c.refuse(StageMail, "BODY must be 7BIT or 8BITMIME")
	}
	if p.SMTPUTF8 {
		if c.caps&capSMTPUTF8 == 0 {
			re := localReply(StageMail, 553, "5.6.7", "SMTPUTF8 is not supported by the mail server behind this one")
			return re.Reply, re
		}
		b = append(b, " SMTPUTF8"...)
	}
	if c.caps&capDSN != 0 {
		switch {
		case p.Ret == "":
		case strings.EqualFold(p.Ret, "FULL"), strings.EqualFold(p.Ret, "HDRS"):
			b = append(append(b, " RET="...), strings.ToUpper(p.Ret)...)
		default:
			return c.refuse(StageMail, "RET must be FULL or HDRS")
		}
		if p.EnvID != "" {
			b = appendXtext(append(b, " ENVID="...), p.EnvID)
		}
	}
	if p.Auth != nil && c.caps&capAuth != 0 {
		b = append(b, " AUTH="...)
		if *p.Auth == "" {
			b = append(b, "<>"...)
		} else {
			b = appendXtext(b, *p.Auth)
		}
	}
	c.cmd = b
	return c.do(StageMail, b, 2)
}

// Rcpt sends RCPT TO:<to> with the DSN parameters if the backend has DSN.
// Local refusals as for Mail.
func (c *Conn) Rcpt(to string, p RcptParams) (*Reply, error) {
	if err := c.ready(); err != nil {
		return nil, err
	}
	if hasCtl(to) {
		return c.refuse(StageRcpt, "recipient address contains CR, LF or NUL")
	}
	b := append(append(append(c.cmd[:0], "RCPT TO:<"...), to...), '>')
	if c.caps&capDSN != 0 {
		if len(p.Notify) > 0 {
			b = append(b, " NOTIFY="...)
			for i, n := range p.Notify {
				if !validNotify(n, len(p.Notify)) {
					return c.refuse(StageRcpt, "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
				}
				if i > 0 {
					b = append(b, ',')
				}
				b = append(b, strings.ToUpper(n)...)
			}
		}
		if typ, addr, ok := strings.Cut(p.ORcpt, ";"); ok {
			switch {
			case strings.EqualFold(typ, "rfc822"):
				b = appendXtext(append(b, " ORCPT=rfc822;"...), addr)
			case strings.EqualFold(typ, "utf-8"):
				b = appendUTF8AddrXtext(append(b, " ORCPT=utf-8;"...), addr)
			}
		}
	}
	c.cmd = b
	return c.do(StageRcpt, b, 2)
}

func validNotify(n string, count int) bool {
	if strings.EqualFold(n, "NEVER") {
		return count == 1
	}
	return strings.EqualFold(n, "SUCCESS") || strings.EqualFold(n, "FAILURE") || strings.EqualFold(n, "DELAY")
}

// appendUTF8AddrXtext appends s as RFC 6533 utf-8-addr-xtext: printable ASCII
// except '+', '=' and '\' as is, every other character as \x{HEX}. Valid
// whether or not SMTPUTF8 is in use.
func appendUTF8AddrXtext(dst []byte, s string) []byte {
	for _, r := range s {
		if r >= '!' && r <= '~' && r != '+' && r != '=' && r != '\\' {
			dst = append(dst, byte(r))
			continue
		}
		dst = append(dst, `\x{`...)
		// HEXPOINT: upper-case, at least two digits (RFC 6533 §3).
		for shift := max(8, (bits.Len32(uint32(r))+3)/4*4); shift > 0; shift -= 4 {
			dst = append(dst, hexUpper[uint32(r)>>(shift-4)&0xF])
		}
		dst = append(dst, '}')
	}
	return dst
}

// Reset sends RSET.
func (c *Conn) Reset() (*Reply, error) { return c.simple(StageRset, "RSET") }

// Noop sends NOOP.
func (c *Conn) Noop() (*Reply, error) { return c.simple(StageNoop, "NOOP") }

func (c *Conn) simple(stage, cmd string) (*Reply, error) {
	if err := c.ready(); err != nil {
		return nil, err
	}
	return c.do(stage, append(c.cmd[:0], cmd...), 2)
}

// Quit sends QUIT, waits a little for the reply, and closes the connection.
// On a Conn that is already unusable it only closes; so it does on a
// prepared PROXY connection, where nothing may come before the header.
// It must not run concurrently with another call (Close may).
func (c *Conn) Quit() error {
	defer c.release()
	defer c.Close()
	if err := c.usable(); err != nil {
		return err
	}
	if c.unbound && (c.o.Method == MethodProxyV1 || c.o.Method == MethodProxyV2) {
		return nil
	}
	if err := c.send(StageQuit, append(c.cmd[:0], "QUIT"...), min(quitTimeout, c.o.CommandTimeout)); err != nil {
		return err
	}
	_, err := c.reply(StageQuit, 2)
	return err
}

// refuse returns a local 501 5.5.4 refusal (the Conn stays usable).
func (c *Conn) refuse(stage, text string) (*Reply, error) {
	re := localRefusal(stage, text)
	return re.Reply, re
}

// do sends one command and reads its reply (see judge for want). Sending and
// reading are separate steps so that pipelined commands can later be written
// together (writeCmd…, flush) and their replies read in order.
func (c *Conn) do(stage string, line []byte, want int) (*Reply, error) {
	if err := c.send(stage, line, c.o.CommandTimeout); err != nil {
		return nil, err
	}
	return c.reply(stage, want)
}

// send writes one command with a deadline of timeout for it and its reply.
func (c *Conn) send(stage string, line []byte, timeout time.Duration) error {
	c.setDeadline(timeout)
	c.writeCmd(line)
	return c.flush(stage)
}

// writeCmd buffers a command line; errors surface at flush.
func (c *Conn) writeCmd(line []byte) {
	c.bw.Write(line)
	c.bw.WriteString("\r\n")
}

// Data sends DATA and, after the backend's 354, the message from msg:
// dot-stuffed, every line ending in CRLF (a bare LF or a bare CR becomes
// CRLF, so nothing in msg can end the data early), then the final ".".
// It returns the backend's reply to the final dot.
//
// A refusal of DATA itself is a *ReplyError with Stage "data"; a refusal of
// the message one with Stage "data-end". If reading msg fails, or ctx ends,
// before the message is complete, the connection is closed without the final
// dot, so that the backend discards the partial message, and the error is
// returned. The message is streamed, never held in memory.
func (c *Conn) Data(ctx context.Context, msg io.Reader) (*Reply, error) {
	if err := c.ready(); err != nil {
		return nil, err
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { c.nc.Close() })
		defer func() {
			if !stop() {
				c.fail(fmt.Errorf("backend: data: %w", context.Cause(ctx)))
			}
		}()
	}
	r, err := c.data(ctx, msg)
	if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("backend: data: %w (%w)", context.Cause(ctx), err)
	}
	return r, err
}

func (c *Conn) data(ctx context.Context, msg io.Reader) (*Reply, error) {
	if err := c.send(StageData, append(c.cmd[:0], "DATA"...), c.o.CommandTimeout); err != nil {
		return nil, err
	}
	code, n, err := c.readReply(StageData)
	if err != nil {
		return nil, err
	}
	if code != 354 { // a refusal to pass on, or out of step
		return c.judge(StageData, 354, code, n)
	}
	// The 354 is not made into a Reply: nobody needs it (saves two allocations).

	c.writeIdle = c.o.CommandTimeout
	err = c.streamBody(ctx, msg)
	c.writeIdle = 0
	if err != nil {
		// Without the final dot the backend drops what it got so far.
		c.nc.Close()
		return nil, c.fail(err)
	}
	c.setDeadline(c.o.DataTimeout)
	return c.reply(StageDataEnd, 2)
}

// dataBufs are the buffers DATA streams through: a 32 KiB read chunk and a
// 32 KiB writer (1.4x the throughput of 4 KiB writes on large messages over
// loopback), pooled so that an idle Conn holds only its 4 KiB buffers.
type dataBufs struct {
	chunk []byte
	w     *bufio.Writer
}

const dataBufSize = 32 << 10

var dataPool = sync.Pool{New: func() any {
	return &dataBufs{chunk: make([]byte, dataBufSize), w: bufio.NewWriterSize(nil, dataBufSize)}
}}

// streamBody copies msg to the backend, dot-stuffed with CRLF line endings,
// and ends it with ".\r\n".
func (c *Conn) streamBody(ctx context.Context, msg io.Reader) error {
	bufs := dataPool.Get().(*dataBufs)
	bufs.w.Reset(connWriter{c})
	defer func() {
		bufs.w.Reset(nil)
		dataPool.Put(bufs)
	}()
	d := dotWriter{w: bufs.w, bol: true}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("backend: data: %w", err)
		}
		n, rerr := msg.Read(bufs.chunk)
		if n > 0 {
			if err := d.write(bufs.chunk[:n]); err != nil {
				return fmt.Errorf("backend: write data: %w", err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("backend: reading the message to relay: %w", rerr)
		}
	}
	if err := d.close(); err != nil {
		return fmt.Errorf("backend: write data: %w", err)
	}
	if err := bufs.w.Flush(); err != nil {
		return fmt.Errorf("backend: write data: %w", err)
	}
	return nil
}

// dotWriter writes message bytes as SMTP DATA content (RFC 5321 §4.5.2):
// every line ends in CRLF, whatever ended it in the input (CRLF, bare LF or
// bare CR), and a line that starts with '.' gets another '.'.
type dotWriter struct {
	w   *bufio.Writer
	bol bool // at the beginning of a line
	cr  bool // the last byte written was a CR whose LF may come next
}

func (d *dotWriter) write(p []byte) error {
	var err error
	for len(p) > 0 && err == nil {
		if d.cr { // a CR ended the last chunk
			d.cr, d.bol = false, true
			if _, err = d.w.WriteString("\r\n"); err != nil {
				break
			}
			if p[0] == '\n' {
				p = p[1:]
				continue
			}
		}
		if d.bol && p[0] == '.' {
			if err = d.w.WriteByte('.'); err != nil {
				break
			}
		}
		lf := bytes.IndexByte(p, '\n')
		seg := p
		if lf >= 0 {
			seg = p[:lf]
		}
		switch cr := bytes.IndexByte(seg, '\r'); {
		case cr >= 0 && cr == lf-1: // CRLF: the common case
			_, err = d.w.Write(p[:lf+1])
			p, d.bol = p[lf+1:], true
		case cr == len(p)-1: // CR at the end of the chunk: LF may follow
			_, err = d.w.Write(p[:cr])
			p, d.cr = nil, true
		case cr >= 0: // bare CR
			if _, err = d.w.Write(p[:cr]); err == nil {
				_, err = d.w.WriteString("\r\n")
			}
			p, d.bol = p[cr+1:], true
		case lf >= 0: // bare LF
			if _, err = d.w.Write(p[:lf]); err == nil {
				_, err = d.w.WriteString("\r\n")
			}
			p, d.bol = p[lf+1:], true
		default: // no line end in this chunk
			_, err = d.w.Write(p)
			p, d.bol = nil, false
		}
	}
	return err
}

// close ends the last line if it is open and writes the final dot.
func (d *dotWriter) close() error {
	if d.cr || !d.bol {
		if _, err := d.w.WriteString("\r\n"); err != nil {
			return err
		}
	}
	_, err := d.w.WriteString(".\r\n")
	return err
}
