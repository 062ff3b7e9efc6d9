package checks

import (
	"net/netip"
	"time"

	"github.com/mxguard/mxguard/message"
)

// Session is what a client has said so far, as the checks see it. The
// pipeline fills it in stage by stage; checks read it, and may keep values
// for each other (SPF's result for DMARC) under typed keys.
type Session struct {
	ID      string // the session id of the logs
	Client  netip.AddrPort
	Trusted bool // trusted_networks: no check runs

	// The greeting: what the client sent before the banner, and when.
	Early      []byte
	EarlyAfter time.Duration
	Waited     bool // the client waited out the greeting delay
	// EndWait ends the greeting wait at once: a check that learns during
	// it that the client needs no greeting test (a DNS allowlisting)
	// calls it, from any goroutine. Nil when there is no wait to end.
	EndWait func()

	// Line is the command line at the Command stage, with its line end
	// (CRLF, or a bare LF); Lines counts the command lines so far.
	Line  []byte
	Lines int
	// Pipelined: Line arrived before the reply to the command before it
	// was sent.
	Pipelined bool
	// Messages counts the messages whose DATA stage ran.
	Messages int

	// HELO is the newest HELO/EHLO name; HELOs all of them, in order.
	HELO  string
	HELOs []string

	// The transaction: MAIL FROM (nil before it; "" is the null sender),
	// the recipient being decided at Rcpt, and those accepted.
	From  *string
	Rcpt  string
	Rcpts []string

	// The message, at Data. Header is nil when it could not be read;
	// HeaderErr then says why. Body is where the body starts.
	Message   *message.Spool
	Header    *message.Header
	HeaderErr error
	Body      int64

	// Known is what the memory of clients recalled of this one at
	// connect (its reputation).
	Known []Result

	// RDNS waits for the client's forward-confirmed reverse DNS name:
	// "" if there is none, TempUnavail if the look-up failed for now.
	RDNS func() string

	// The values checks keep: a handful each, so a slice searched in
	// order (a map would be 300 bytes more for every waiting connection).
	conn, txn []keyValue
}

type keyValue struct{ k, v any }

// TempUnavail is XCLIENT's word for a name look-up that failed for now.
const TempUnavail = "[TEMPUNAVAIL]"

// Scope says how long a value a check keeps lasts.
type Scope bool

const (
	ConnScope Scope = false // the connection
	TxnScope  Scope = true  // one transaction: MAIL FROM to the end of DATA or RSET
)

// Key names a value of type T that a check keeps on a session, for itself
// or for the checks and header fields that build on it.
type Key[T any] struct {
	name  string
	scope Scope
}

// NewKey returns a key; name is for humans.
func NewKey[T any](name string, scope Scope) *Key[T] { return &Key[T]{name: name, scope: scope} }

func (s *Session) values(scope Scope) *[]keyValue {
	if scope == TxnScope {
		return &s.txn
	}
	return &s.conn
}

// Get returns the value kept under k, if any.
func Get[T any](s *Session, k *Key[T]) (T, bool) {
	for _, e := range *s.values(k.scope) {
		if e.k == any(k) {
			return e.v.(T), true
		}
	}
	var zero T
	return zero, false
}

// Put keeps v under k.
func Put[T any](s *Session, k *Key[T], v T) {
	vs := s.values(k.scope)
	for i := range *vs {
		if (*vs)[i].k == any(k) {
			(*vs)[i].v = v
			return
		}
	}
	*vs = append(*vs, keyValue{k, v})
}

// ResetTransaction forgets the transaction: its envelope, message and
// transaction-scoped values.
func (s *Session) ResetTransaction() {
	s.From, s.Rcpt, s.Rcpts = nil, "", nil
	s.Message, s.Header, s.HeaderErr, s.Body = nil, nil, nil, 0
	clear(s.txn) // no references kept
	s.txn = s.txn[:0]
}

// headersKey holds the header fields checks add to a transaction's message.
var headersKey = NewKey[[]string]("headers", TxnScope)

// AddHeader adds a header field (without its line end) to the message of
// the transaction, on top of it, after the Authentication-Results.
func AddHeader(s *Session, field string) {
	h, _ := Get(s, headersKey)
	Put(s, headersKey, append(h, field))
}

// Headers returns the header fields checks added to the transaction.
func Headers(s *Session) []string {
	h, _ := Get(s, headersKey)
	return h
}
