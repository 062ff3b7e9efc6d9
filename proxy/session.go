package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/proxy/backend"
	"github.com/mxguard/mxguard/rules"
)

// session is one go-smtp Session: from HELO to QUIT, or to the next
// STARTTLS. What must outlive it lives in connState.
type session struct {
	srv *Server
	c   *smtp.Conn
	cc  *clientConn
	st  *connState
	rt  *Runtime

	be  *backend.Conn // opened at the first MAIL, kept for the next ones
	txn transaction
}

// transaction is what one MAIL FROM … DATA holds.
type transaction struct {
	from    string
	rcpts   []string
	results []checks.Result
	// pending is a refusal decided before RCPT, given at RCPT TO so the log
	// holds the envelope (reject_at = "rcpt").
	pending *rules.Verdict
	// open: the backend has a transaction open (MAIL accepted).
	open bool
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
		se.st.tls = true
	}
	if err := se.hello(); err != nil {
		return nil, err
	}
	return se, nil
}

// hello checks a HELO name not seen before on this connection. The verdict
// sticks to the connection: saying HELO again does not wash it, because
// every name's result stays in the connection's results.
func (se *session) hello() error {
	name := se.c.Hostname()
	if se.st.sawHELO(name) && !se.st.trusted {
		ctx, cancel := context.WithTimeout(context.Background(), se.rt.Cfg.DNS.Timeout.D()*3)
		r := se.rt.HELO.Check(ctx, name, se.st.client.Addr())
		cancel()
		se.st.addResult(r)
	}
	v := se.decide()
	if v.Action.Refuses() && (v.Action == rules.Drop || !se.rt.Policy.RejectAtRcpt) {
		return se.refuse("helo", v, "")
	}
	return nil
}

// decide weighs the connection's and the transaction's results.
func (se *session) decide() rules.Verdict {
	v := se.rt.Policy.Decide(se.st.connResults(), se.txn.results)
	se.st.mu.Lock()
	se.st.lastVerdict = v
	se.st.mu.Unlock()
	return v
}

// refuse logs a refusal and returns the reply for go-smtp to send. A drop
// hangs up right after the reply.
func (se *session) refuse(stage string, v rules.Verdict, rcpt string) error {
	se.srv.refuse(se.st, stage, v, se.txn.from, rcpt)
	if v.Action == rules.Drop {
		se.cc.writeAndClose(v.Reply.String(), se.rt.Cfg.Limits.WriteTimeout.D())
	}
	return smtpError(v.Reply)
}

func (se *session) Mail(from string, opts *smtp.MailOptions) error {
	se.txn = transaction{from: from}
	// A client that changed its name with a second EHLO (go-smtp does not
	// ask us again) has the new name checked too.
	if h := se.c.Hostname(); h != se.st.lastHELO() {
		if err := se.hello(); err != nil {
			return err
		}
	}
	if !se.st.trusted {
		if r, spoof := se.rt.Spoof.Check(from); spoof {
			se.txn.results = append(se.txn.results, r)
		}
	}
	v := se.decide()
	if v.Action.Refuses() {
		if v.Action == rules.Drop || !se.rt.Policy.RejectAtRcpt {
			return se.refuse("mail", v, "")
		}
		se.txn.pending = &v
		return nil // refused at RCPT TO, without troubling the backend
	}
	if err := se.dial(); err != nil {
		return err
	}
	_, err := se.be.Mail(from, mailParams(opts))
	if err != nil {
		return se.backendError("mail", err)
	}
	se.txn.open = true
	return nil
}

func (se *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if v := se.txn.pending; v != nil {
		return se.refuse("rcpt", *v, to)
	}
	if se.be == nil {
		return errLost
	}
	_, err := se.be.Rcpt(to, rcptParams(opts))
	if err != nil {
		return se.backendError("rcpt", err)
	}
	se.txn.rcpts = append(se.txn.rcpts, to)
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
	msg, err := readMessage(r)
	if err != nil {
		if errors.Is(err, smtp.ErrDataTooLarge) {
			return smtp.ErrDataTooLarge
		}
		if errors.Is(err, smtp.ErrTooLongLine) {
			// Permanent: the same message would fail the same way again.
			return &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2},
				Message: fmt.Sprintf("Message line longer than %d bytes", cfg.Limits.MaxLineLength)}
		}
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error reading message: " + err.Error()}
	}
	defer msg.release()

	v := se.decide()
	if v.Action.Refuses() {
		return se.refuse("data", v, "")
	}
	if se.be == nil {
		return errLost
	}
	head := se.received()
	if v.Action == rules.Tag {
		head = append(head, fmt.Sprintf("X-Spam-Flag: YES\r\nX-Spam-Score: %g\r\n", v.Score)...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), se.rt.Backend.DataTimeout+time.Minute)
	defer cancel()
	rep, err := se.be.Data(ctx, io.MultiReader(bytes.NewReader(head), msg.reader()))
	se.txn.open = false
	if err != nil {
		return se.backendError("data", err)
	}
	se.st.mu.Lock()
	se.st.accepted++
	se.st.lastReply = rep.String()
	se.st.mu.Unlock()
	se.srv.log.Info("relayed", "session", se.st.id, "client", se.st.client.String(), "helo", se.c.Hostname(),
		"from", se.txn.from, "rcpt", se.txn.rcpts, "size", msg.size(), "action", v.Action.String(),
		"score", v.Score, "reply", rep.String())
	// go-smtp sends any *SMTPError as the final reply: this passes the
	// backend's own 250 line (with its queue id) through.
	return replyError(rep)
}

func (se *session) Reset() {
	if se.txn.open && se.be != nil {
		if _, err := se.be.Reset(); err != nil {
			se.closeBackend()
		}
	}
	se.txn = transaction{}
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
		Name:     st.reverseName(),
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
	se.txn.open = false
}

// backendError turns what went wrong toward the backend into the client's
// reply. The backend's own refusals pass through verbatim; lost connections
// become 451 so the client keeps the message and retries.
func (se *session) backendError(stage string, err error) error {
	var re *backend.ReplyError
	if errors.As(err, &re) {
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
