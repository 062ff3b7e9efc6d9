package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/message"
	"github.com/mxguard/mxguard/proxy/backend"
	"github.com/mxguard/mxguard/rules"
)

// The go-smtp Session of a connection is the conn itself: it does the SMTP,
// the pipeline decides, and the backend gets what passes, in lockstep.

// errLost answers a transaction whose backend connection broke earlier.
var errLost = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Backend connection lost, try again later"}

var errNoConn = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Internal error, try again later"}

// NewSession implements smtp.Backend. go-smtp calls it at the first HELO or
// EHLO (again only if it refused that one), which makes it the HELO hook.
func (s *Server) NewSession(sc *smtp.Conn) (smtp.Session, error) {
	c := connOf(sc.Conn())
	if c == nil {
		return nil, errNoConn
	}
	c.smtp = sc
	if err := c.hello(); err != nil {
		return nil, err
	}
	return c, nil
}

// helo is the current HELO name.
func (c *conn) helo() string {
	if c.smtp == nil {
		return ""
	}
	return c.smtp.Hostname()
}

// hello checks the current HELO name.
func (c *conn) hello() error {
	return c.apply(c.pipe.Helo(c.context(), c.helo()), "")
}

// apply turns a decision into the reply for go-smtp: nil goes on, a
// refusal is logged and returned (a drop also hangs up after it).
func (c *conn) apply(d rules.Decision, rcpt string) error {
	c.logWould(d)
	if !d.Refuse {
		return nil
	}
	c.refuse(d, c.from, rcpt)
	if d.Action == rules.Drop {
		c.dropWith(d.Reply.String())
	}
	return c.ours(smtpError(d.Reply))
}

// ours marks the next reply go-smtp writes as one mxguard made (or the
// backend's), not a refusal of go-smtp's own.
func (c *conn) ours(err *smtp.SMTPError) *smtp.SMTPError {
	c.tagged = true
	return err
}

func (c *conn) Mail(from string, opts *smtp.MailOptions) error {
	c.mailStarted.Store(true)
	c.from, c.mail, c.held, c.open = from, opts, false, false
	// A client that changed its name with a second EHLO (go-smtp does not
	// ask us again) has the new name checked too. A name already checked
	// needs no second decision: MAIL's own covers it.
	if !c.pipe.SawHELO(c.helo()) {
		if err := c.hello(); err != nil {
			return err
		}
	}
	d := c.pipe.Mail(c.context(), from)
	if err := c.apply(d, ""); err != nil {
		return err
	}
	if d.Hold {
		c.held = true // refused at RCPT, without troubling the backend
		return nil
	}
	rep, err := c.relayMail()
	if err != nil {
		return err
	}
	c.wire.acceptedAs(rep)
	return nil
}

// relayMail opens the backend transaction (and the backend connection,
// for the first one). A kept connection the backend has closed meanwhile
// (an idle timeout, a restart) is dialled again once: no transaction was
// open on it, so nothing can be doubled.
func (c *conn) relayMail() (*backend.Reply, error) {
	kept := c.be != nil
	if err := c.dial(); err != nil {
		return nil, err
	}
	rep, err := c.backendMail()
	var re *backend.ReplyError
	if err != nil && kept && !errors.As(err, &re) {
		c.closeBackend()
		if err := c.dial(); err != nil {
			return nil, err
		}
		rep, err = c.backendMail()
	}
	if err != nil {
		return nil, c.backendError("mail", err)
	}
	c.open, c.held = true, false
	return rep, nil
}

func (c *conn) Rcpt(to string, opts *smtp.RcptOptions) error {
	d := c.pipe.Rcpt(c.context(), to)
	if err := c.apply(d, to); err != nil {
		return err
	}
	if d.Hold {
		return nil // accepted here; the refusal comes after DATA
	}
	if !c.open {
		// MAIL was held for a refusal this recipient is exempt from
		// (an allow list): tell the backend about the transaction now.
		// (The client had go-smtp's 250 to its MAIL then.)
		if _, err := c.relayMail(); err != nil {
			return err
		}
	}
	if c.be == nil {
		return c.ours(errLost)
	}
	began := time.Now()
	rep, err := c.be.Rcpt(to, rcptParams(opts))
	c.timed("rcpt", began, rep)
	if err != nil {
		return c.backendError("rcpt", err)
	}
	c.rcpts++
	c.wire.acceptedAs(rep)
	return nil
}

func (c *conn) Data(r io.Reader) error {
	cfg := c.rt.Cfg
	// The whole message is read before the backend sees any of it: the
	// checks that read the body decide before the backend could accept, and
	// a client that vanishes mid-DATA leaves nothing half-sent behind.
	c.Conn.SetReadDeadline(time.Now().Add(cfg.Limits.DataTimeout.D()))
	spool := message.NewSpool(cfg.Message.MemoryLimit, cfg.Message.SpoolDir)
	defer spool.Close() // removes a spilled file, whatever happens
	nul := &nulFilter{r: r, remove: cfg.Limits.NULBytes == config.NULRemove}
	if _, err := spool.ReadFrom(nul); err != nil {
		return c.dataError(err)
	}
	if nul.n > 0 {
		if !nul.remove {
			d := rules.Refusal(checks.AtData, protocolCheck, "protocol",
				fmt.Sprintf("the message has %d NUL bytes (limits.nul_bytes)", nul.n),
				rules.Reply{Code: 550, Enhanced: "5.6.0", Text: "Message refused: it contains NUL characters"}, false)
			c.refuse(d, c.from, "")
			return c.ours(smtpError(d.Reply))
		}
		c.srv.log.Info("NUL removed", "session", c.id, "client", clientString(c.client), "stage", "data", "bytes", nul.n)
	}
	ctx := c.context()
	d, prep := c.pipe.Data(ctx, spool)
	if err := c.apply(d, ""); err != nil {
		return err
	}
	if c.be == nil || !c.open {
		return c.ours(errLost)
	}
	began := time.Now()
	rep, err := c.be.Data(ctx, prep.Reader(spool, c.received()))
	c.timed("data", began, rep)
	// A refusal of the DATA command itself leaves the backend's transaction
	// open (the next one must begin with RSET); after the final dot it is
	// over, whatever the reply.
	var re *backend.ReplyError
	c.open = errors.As(err, &re) && re.Stage == backend.StageData
	if err != nil {
		return c.backendError("data", err)
	}
	c.accepted++
	c.rt.Shared.Metrics.MessageRelayed()
	c.errors, c.junk = 0, 0 // the limits count errors made without delivering mail
	c.lastReply = rep.String()
	c.relayed(d, spool.Size(), rep.String())
	// go-smtp sends any *SMTPError as the final reply: this passes the
	// backend's own 250 line (with its queue id) through.
	return replyError(rep)
}

// dataError answers a message that could not be read whole. A line too
// long, or data cut off by its deadline, leave the client out of step: the
// connection ends after the one reply.
func (c *conn) dataError(err error) error {
	cfg := c.rt.Cfg
	var d rules.Decision
	switch {
	case errors.Is(err, smtp.ErrDataTooLarge):
		d = rules.Refusal(checks.AtData, limitCheck, "limit",
			fmt.Sprintf("the message is larger than %d bytes (limits.max_message_size)", cfg.Limits.MaxMessageSize),
			rules.Reply{Code: 552, Enhanced: "5.3.4", Text: "Max message size exceeded"}, false)
	case errors.Is(err, smtp.ErrTooLongLine):
		// Permanent: the same message would fail the same way again.
		d = rules.Refusal(checks.AtData, limitCheck, "limit",
			fmt.Sprintf("a message line is longer than %d bytes (limits.max_line_length)", cfg.Limits.MaxLineLength),
			rules.Reply{Code: 500, Enhanced: "5.5.2", Text: fmt.Sprintf("Message line longer than %d bytes", cfg.Limits.MaxLineLength)}, true)
	default:
		c.srv.log.Warn("message not read", "session", c.id, "client", clientString(c.client), "err", err.Error())
		d = rules.Refusal(checks.AtData, limitCheck, "limit", "the message could not be read (limits.data_timeout): "+err.Error(),
			rules.Reply{Code: 451, Enhanced: "4.3.0", Text: "Error reading message, try again later"}, false)
	}
	c.refuse(d, c.from, "")
	if d.Action == rules.Drop {
		c.dropWith(d.Reply.String())
	}
	return c.ours(smtpError(d.Reply))
}

func (c *conn) Reset() {
	if c.open && c.be != nil {
		if _, err := c.be.Reset(); err != nil {
			c.closeBackend()
		}
	}
	c.open, c.held = false, false
	c.pipe.Reset()
}

func (c *conn) Logout() error {
	// go-smtp logs out before it closes the connection: the client's 221
	// (held by the wire) goes now, not after the backend's QUIT.
	c.flush()
	if c.be != nil {
		c.be.Quit()
		c.be = nil
	}
	return nil
}

// dial opens the backend connection for the first transaction and tells it
// who the client really is. (Binding it ahead, at the client's EHLO, would
// save a round trip, but the backend must not hear of a client before its
// first transaction: lifecycle_test.go.)
func (c *conn) dial() error {
	if c.be != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.context(), c.rt.Backend.DialTimeout+c.rt.Backend.CommandTimeout)
	defer cancel()
	be, err := c.bind(ctx, c.identity(c.helo()))
	if err != nil {
		return c.backendError("connect", err)
	}
	c.be = be
	return nil
}

// identity is the client as the backend learns it.
func (c *conn) identity(helo string) backend.Identity {
	return backend.Identity{
		Addr:     c.client.Addr().AsSlice(),
		Port:     int(c.client.Port()),
		Name:     c.pipe.RDNS(), // "" becomes XCLIENT NAME=[UNAVAILABLE]
		Helo:     helo,
		Proto:    "ESMTP",
		DestAddr: c.local.Addr().AsSlice(),
		DestPort: int(c.local.Port()),
	}
}

// bind makes a backend connection for the client id: a prepared one
// (bepool.go) bound, or a new one. Safe on any goroutine.
func (c *conn) bind(ctx context.Context, id backend.Identity) (*backend.Conn, error) {
	began := time.Now()
	defer func() { c.rt.Shared.Metrics.BackendDuration("connect", time.Since(began)) }()
	if pc := c.srv.pool(c.rt).get(); pc != nil {
		c.usedPool = true
		if pc.Bind(ctx, id) == nil {
			return pc, nil
		}
	}
	// Without a prepared connection, or when binding it failed (it waited
	// too long and the backend dropped it, or the backend refuses), a new
	// one: its errors are what the client hears of.
	return backend.Dial(ctx, c.rt.Backend, id)
}

// backendMail opens the backend's transaction.
func (c *conn) backendMail() (*backend.Reply, error) {
	began := time.Now()
	rep, err := c.be.Mail(c.from, mailParams(c.mail))
	c.timed("mail", began, rep)
	return rep, err
}

// timed records a backend reply and how long it took.
func (c *conn) timed(stage string, began time.Time, rep *backend.Reply) {
	m := c.rt.Shared.Metrics
	m.BackendDuration(stage, time.Since(began))
	if rep != nil && !rep.Local {
		m.BackendReply(stage, rep.Code)
	}
}

func (c *conn) closeBackend() {
	if c.be != nil {
		c.be.Close()
		c.be = nil
	}
	c.open = false
}

// backendError turns what went wrong toward the backend into the client's
// reply. The backend's own refusals pass through verbatim; lost connections
// become 451 so the client keeps the message and retries.
func (c *conn) backendError(stage string, err error) error {
	var re *backend.ReplyError
	if errors.As(err, &re) && !errors.Is(err, backend.ErrUnusable) {
		if re.Reply.Code == 421 {
			// The backend closes the session: so do we, after passing its
			// word on, as if the client had been talking to it.
			c.closeBackend()
			c.srv.log.Warn("backend closed the session", "session", c.id, "client", clientString(c.client),
				"stage", re.Stage, "reply", re.Reply.String())
			c.dropWith(replyText(re.Reply))
			return c.ours(replyError(re.Reply))
		}
		if re.Stage == backend.StageGreeting || re.Stage == backend.StageXCLIENT {
			// The backend refusing *us* is a setup problem (XCLIENT not
			// authorised, say): never bounce the client's mail for it.
			c.srv.log.Error("backend refused the proxy", "session", c.id, "stage", re.Stage,
				"backend", c.rt.Backend.Addr, "reply", re.Reply.String())
			c.closeBackend()
			return c.ours(&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "Backend unavailable, try again later"})
		}
		c.lastReply = re.Reply.String()
		return c.ours(replyError(re.Reply))
	}
	c.closeBackend()
	c.srv.log.Warn("backend failed", "session", c.id, "client", clientString(c.client), "stage", stage,
		"backend", c.rt.Backend.Addr, "err", err.Error())
	if stage == "connect" {
		return c.ours(&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "Backend unavailable, try again later"})
	}
	return c.ours(&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Backend connection lost, message not delivered, try again later"})
}

// replyText renders a backend reply as the lines we would send.
func replyText(r *backend.Reply) string {
	var b strings.Builder
	for i, l := range r.Lines {
		if i > 0 {
			b.WriteString("\r\n")
		}
		sep := "-"
		if i == len(r.Lines)-1 {
			sep = " "
		}
		fmt.Fprintf(&b, "%d%s", r.Code, sep)
		if r.Enhanced != "" {
			b.WriteString(r.Enhanced + " ")
		}
		b.WriteString(l)
	}
	return b.String()
}

// replyError passes a backend reply on as go-smtp's error type. go-smtp
// writes an enhanced code on the last line only; the backend wrote one on
// every line, so the code goes into the text of each line instead.
func replyError(r *backend.Reply) *smtp.SMTPError {
	var b strings.Builder
	for i, l := range r.Lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		if r.Enhanced != "" {
			b.WriteString(r.Enhanced)
			b.WriteByte(' ')
		}
		b.WriteString(l)
	}
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.NoEnhancedCode, Message: b.String()}
}

// smtpError converts a decision's reply into what go-smtp writes back. It
// must be a bare *smtp.SMTPError: go-smtp does not unwrap errors. The
// enhanced code goes into the text, as for the backend's replies
// (replyError): go-smtp would otherwise invent "X.0.0" for a reply without
// one.
func smtpError(r rules.Reply) *smtp.SMTPError {
	text := r.Text
	if r.Enhanced != "" {
		text = r.Enhanced + " " + text
	}
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.NoEnhancedCode, Message: text}
}

func mailParams(o *smtp.MailOptions) backend.MailParams {
	if o == nil {
		return backend.MailParams{}
	}
	return backend.MailParams{
		Size:     o.Size,
		Body:     string(o.Body),
		SMTPUTF8: o.UTF8,
		Ret:      string(o.Return),
		EnvID:    o.EnvelopeID,
		Auth:     o.Auth,
	}
}

func rcptParams(o *smtp.RcptOptions) backend.RcptParams {
	if o == nil {
		return backend.RcptParams{}
	}
	p := backend.RcptParams{}
	for _, n := range o.Notify {
		p.Notify = append(p.Notify, string(n))
	}
	if o.OriginalRecipient != "" {
		p.ORcpt = string(o.OriginalRecipientType) + ";" + o.OriginalRecipient
	}
	return p
}
