package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxguard/mxguard/message"
	"github.com/mxguard/mxguard/pipeline"
	"github.com/mxguard/mxguard/proxy/backend"
	"github.com/mxguard/mxguard/rules"
)

// session is one go-smtp Session: from HELO to QUIT, or to the next
// STARTTLS. What must outlive it lives in connState and the pipeline's
// session. It does the SMTP; the pipeline decides.
type session struct {
	srv *Server
	c   *smtp.Conn
	cc  *clientConn
	st  *connState
	rt  *Runtime

	be   *backend.Conn // opened at the first relayed transaction, kept for the next
	from string
	mail *smtp.MailOptions
	// held: MAIL was accepted without telling the backend (a refusal is
	// pending); open: the backend has a transaction open.
	held, open bool
}

// errLost answers a transaction whose backend connection broke earlier.
var errLost = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Backend connection lost, try again later"}

var errNoConn = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Internal error, try again later"}

// NewSession implements smtp.Backend. go-smtp calls it at the first HELO or
// EHLO (and again after STARTTLS), which makes it the HELO hook.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	cc := clientOf(c.Conn())
	if cc == nil {
		return nil, errNoConn
	}
	se := &session{srv: s, c: c, cc: cc, st: cc.state, rt: cc.state.rt}
	if _, ok := c.TLSConnectionState(); ok {
		se.st.mu.Lock()
		se.st.tls = true
		se.st.mu.Unlock()
	}
	if err := se.hello(); err != nil {
		return nil, err
	}
	return se, nil
}

func (se *session) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}

// hello checks the current HELO name. Every name's results stay with the
// connection: saying HELO again does not wash a verdict.
func (se *session) hello() error {
	ctx, cancel := se.ctx()
	defer cancel()
	return se.apply(se.st.pipe.Helo(ctx, se.c.Hostname()), "")
}

// apply turns a decision into the reply for go-smtp: nil goes on, a
// refusal is logged and returned (a drop also hangs up after it).
func (se *session) apply(d pipeline.Decision, rcpt string) error {
	se.srv.logWould(se.st, d.Verdict, d.Stage)
	if !d.Refuse {
		return nil
	}
	se.srv.refuse(se.st, d, se.from, rcpt)
	if d.Action == rules.Drop {
		se.cc.writeAndClose(se.c.Conn(), d.Reply.String(), se.rt.Cfg.Limits.WriteTimeout.D())
	}
	return smtpError(d.Reply)
}

func (se *session) Mail(from string, opts *smtp.MailOptions) error {
	se.from, se.mail, se.held, se.open = from, opts, false, false
	// A client that changed its name with a second EHLO (go-smtp does not
	// ask us again) has the new name checked too. A name already checked
	// needs no second decision: MAIL's own covers it.
	if !se.st.pipe.SawHELO(se.c.Hostname()) {
		if err := se.hello(); err != nil {
			return err
		}
	}
	ctx, cancel := se.ctx()
	defer cancel()
	d := se.st.pipe.Mail(ctx, from)
	if err := se.apply(d, ""); err != nil {
		return err
	}
	if d.Hold {
		se.held = true // refused at RCPT, without troubling the backend
		return nil
	}
	return se.relayMail()
}

// relayMail opens the backend transaction (and the backend connection,
// for the first one). A kept connection the backend has closed meanwhile
// (an idle timeout, a restart) is dialled again once: no transaction was
// open on it, so nothing can be doubled.
func (se *session) relayMail() error {
	kept := se.be != nil
	if err := se.dial(); err != nil {
		return err
	}
	_, err := se.be.Mail(se.from, mailParams(se.mail))
	var re *backend.ReplyError
	if err != nil && kept && !errors.As(err, &re) {
		se.closeBackend()
		if err := se.dial(); err != nil {
			return err
		}
		_, err = se.be.Mail(se.from, mailParams(se.mail))
	}
	if err != nil {
		return se.backendError("mail", err)
	}
	se.open, se.held = true, false
	return nil
}

func (se *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	ctx, cancel := se.ctx()
	defer cancel()
	d := se.st.pipe.Rcpt(ctx, to)
	if err := se.apply(d, to); err != nil {
		return err
	}
	if d.Hold {
		return nil // accepted here; the refusal comes after DATA
	}
	if !se.open {
		// MAIL was held for a refusal this recipient is exempt from
		// (an allow list): tell the backend about the transaction now.
		if err := se.relayMail(); err != nil {
			return err
		}
	}
	if se.be == nil {
		return errLost
	}
	if _, err := se.be.Rcpt(to, rcptParams(opts)); err != nil {
		return se.backendError("rcpt", err)
	}
	se.st.mu.Lock()
	se.st.rcpts++
	se.st.mu.Unlock()
	return nil
}

func (se *session) Data(r io.Reader) error {
	cfg := se.rt.Cfg
	// The whole message is read before the backend sees any of it: the
	// checks that read the body decide before the backend could accept, and
	// a client that vanishes mid-DATA leaves nothing half-sent behind.
	se.c.Conn().SetReadDeadline(time.Now().Add(cfg.Limits.DataTimeout.D()))
	spool := message.NewSpool(cfg.Message.MemoryLimit, cfg.Message.SpoolDir)
	defer spool.Close() // removes a spilled file, whatever happens
	if _, err := spool.ReadFrom(r); err != nil {
		switch {
		case errors.Is(err, smtp.ErrDataTooLarge):
			return smtp.ErrDataTooLarge
		case errors.Is(err, smtp.ErrTooLongLine):
			// Permanent: the same message would fail the same way again.
			return &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2},
				Message: fmt.Sprintf("Message line longer than %d bytes", cfg.Limits.MaxLineLength)}
		}
		se.srv.log.Warn("message not read", "session", se.st.id, "client", se.st.client.String(), "err", err.Error())
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error reading message, try again later"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), se.rt.Backend.DataTimeout+time.Minute)
	defer cancel()
	d, prep := se.st.pipe.Data(ctx, spool)
	if err := se.apply(d, ""); err != nil {
		return err
	}
	if se.be == nil || !se.open {
		return errLost
	}
	rep, err := se.be.Data(ctx, prep.Reader(spool, se.received()))
	// A refusal of the DATA command itself leaves the backend's transaction
	// open (the next one must begin with RSET); after the final dot it is
	// over, whatever the reply.
	var re *backend.ReplyError
	se.open = errors.As(err, &re) && re.Stage == backend.StageData
	if err != nil {
		return se.backendError("data", err)
	}
	se.st.mu.Lock()
	se.st.accepted++
	se.st.lastReply = rep.String()
	se.st.mu.Unlock()
	se.srv.log.Info("relayed", "session", se.st.id, "client", se.st.client.String(), "helo", se.c.Hostname(),
		"from", se.from, "rcpt", se.st.pipe.Rcpts(), "size", spool.Size(), "action", d.Action.String(),
		"score", d.Score, "reply", rep.String())
	// go-smtp sends any *SMTPError as the final reply: this passes the
	// backend's own 250 line (with its queue id) through.
	return replyError(rep)
}

func (se *session) Reset() {
	if se.open && se.be != nil {
		if _, err := se.be.Reset(); err != nil {
			se.closeBackend()
		}
	}
	se.open, se.held = false, false
	se.st.pipe.Reset()
}

func (se *session) Logout() error {
	if se.be != nil {
		se.be.Quit()
		se.be = nil
	}
	return nil
}

// dial opens the backend connection for the first transaction and tells it
// who the client really is.
func (se *session) dial() error {
	if se.be != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), se.rt.Backend.DialTimeout+se.rt.Backend.CommandTimeout)
	defer cancel()
	st := se.st
	id := backend.Identity{
		Addr:     st.client.Addr().AsSlice(),
		Port:     int(st.client.Port()),
		Name:     st.pipe.RDNS(), // "" becomes XCLIENT NAME=[UNAVAILABLE]
		Helo:     se.c.Hostname(),
		Proto:    "ESMTP",
		DestAddr: st.local.Addr().AsSlice(),
		DestPort: int(st.local.Port()),
	}
	be, err := backend.Dial(ctx, se.rt.Backend, id)
	if err != nil {
		return se.backendError("connect", err)
	}
	se.be = be
	return nil
}

func (se *session) closeBackend() {
	if se.be != nil {
		se.be.Close()
		se.be = nil
	}
	se.open = false
}

// backendError turns what went wrong toward the backend into the client's
// reply. The backend's own refusals pass through verbatim; lost connections
// become 451 so the client keeps the message and retries.
func (se *session) backendError(stage string, err error) error {
	var re *backend.ReplyError
	if errors.As(err, &re) && !errors.Is(err, backend.ErrUnusable) {
		if re.Reply.Code == 421 {
			// The backend closes the session: so do we, after passing its
			// word on, as if the client had been talking to it.
			se.closeBackend()
			se.srv.log.Warn("backend closed the session", "session", se.st.id, "client", se.st.client.String(),
				"stage", re.Stage, "reply", re.Reply.String())
			se.cc.writeAndClose(se.c.Conn(), replyText(re.Reply), se.rt.Cfg.Limits.WriteTimeout.D())
			return replyError(re.Reply)
		}
		if re.Stage == backend.StageGreeting || re.Stage == backend.StageXCLIENT {
			// The backend refusing *us* is a setup problem (XCLIENT not
			// authorised, say): never bounce the client's mail for it.
			se.srv.log.Error("backend refused the proxy", "session", se.st.id, "stage", re.Stage,
				"backend", se.rt.Backend.Addr, "reply", re.Reply.String())
			se.closeBackend()
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "Backend unavailable, try again later"}
		}
		se.st.mu.Lock()
		se.st.lastReply = re.Reply.String()
		se.st.mu.Unlock()
		return replyError(re.Reply)
	}
	se.closeBackend()
	se.srv.log.Warn("backend failed", "session", se.st.id, "client", se.st.client.String(), "stage", stage,
		"backend", se.rt.Backend.Addr, "err", err.Error())
	if stage == "connect" {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "Backend unavailable, try again later"}
	}
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Backend connection lost, message not delivered, try again later"}
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
