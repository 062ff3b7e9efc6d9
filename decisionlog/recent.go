package decisionlog

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mxguard/mxguard/checks"
)

// Recent keeps the recent sessions of the decision log in memory, for the
// admin listener's web page: the same records `mxguard log` reads back,
// taken from the logger itself (Handler) as they are written, grouped by
// session id. It holds at most the configured number of sessions, at most
// MaxSessionRecords records each and about RecentBytes in all; the session
// least recently active goes first. It is safe for concurrent use.
type Recent struct {
	mu       sync.Mutex
	max      int
	maxBytes int
	byID     map[string]*recentNode
	newest   *recentNode // most recently active; newest.older ... oldest
	oldest   *recentNode
	bytes    int
	anon     uint64
}

// DefaultRecentSessions is the number of sessions kept when NewRecent is
// given 0 or less.
const DefaultRecentSessions = 1000

// MaxSessionRecords bounds the records kept for one session: a client
// refused at each of a thousand RCPTs keeps its first records, its
// summary counts all, and its "session" line is kept whatever.
const MaxSessionRecords = 100

// RecentBytes bounds the memory of the records kept, roughly (their
// strings and fields); past it the least recently active sessions go.
const RecentBytes = 32 << 20

// RecentSession is one session as the decision log tells it: a summary of
// its records and the records themselves, in order.
type RecentSession struct {
	ID     string // the session id; "anon-N" for a refusal before a session began (a connection limit)
	Start  time.Time
	Last   time.Time // the last record's time
	Client string    // ip:port
	Addr   netip.Addr
	HELO   string // the HELO names, joined by ", "
	From   string // the last MAIL FROM; "<>" for the null sender
	Rcpts  []string
	// Action, Rule, Reply and Stage are those of the record that tells
	// what became of the session: its first refusal, else its first
	// relayed message (action accept or tag), else its first "would
	// refuse" (action "would reject", ...). Reply falls back to the last
	// reply of the session line.
	Action, Rule, Reply, Stage string
	Refused, Relayed, Would    int  // records of each kind
	Ended                      bool // the session line came: the connection is over
	Records                    []RecentRecord
	Dropped                    int // records not kept past MaxSessionRecords
}

// RecentRecord is one log record of a session: the fields Record knows,
// and every other field the line had, in order.
type RecentRecord struct {
	Record
	Extra []slog.Attr
}

// recentNode is a session in the list ordered by last activity.
type recentNode struct {
	s            RecentSession
	decided      int // rank of the record the summary took Action from: 0 none, 1 would, 2 relayed, 3 refused
	helos        []string
	bytes        int
	newer, older *recentNode
}

// NewRecent keeps the last n sessions (DefaultRecentSessions for n <= 0).
func NewRecent(n int) *Recent {
	if n <= 0 {
		n = DefaultRecentSessions
	}
	return &Recent{max: n, maxBytes: RecentBytes, byID: make(map[string]*recentNode)}
}

// Cap returns the number of sessions kept at most.
func (r *Recent) Cap() int { return r.max }

// Len returns the number of sessions kept now.
func (r *Recent) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

// recentDecision reports the decision records, kept even without a
// session id.
func recentDecision(msg string) bool {
	switch msg {
	case "refused", "would refuse", "session", "relayed", "pregreet":
		return true
	}
	return false
}

// Add files one record: under its session, or, for a decision record
// without one, as a session of its own. Records of neither kind (started,
// reloaded, ...) are not kept.
func (r *Recent) Add(rec Record) {
	e := RecentRecord{Record: rec}
	r.add(e, recentNames{helos: recentSplit(e.HELO()), rcpts: recentSplit(e.Recipients())})
}

// recentNames are the HELO names and recipients of a record, decoded: the
// handler has them as strings already, and the summary needs them so.
type recentNames struct {
	helo, rcpt   string // a single name, or
	helos, rcpts []string
}

func recentSplit(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func (r *Recent) add(e RecentRecord, names recentNames) {
	if e.Session == "" && !recentDecision(e.Msg) {
		return
	}
	size := e.size()
	r.mu.Lock()
	defer r.mu.Unlock()
	id := e.Session
	if id == "" {
		r.anon++
		id = "anon-" + strconv.FormatUint(r.anon, 10)
	}
	n := r.byID[id]
	if n == nil {
		for len(r.byID) >= r.max {
			r.evict(r.oldest)
		}
		n = &recentNode{s: RecentSession{ID: id, Start: e.Time, Ended: e.Session == ""}}
		r.byID[id] = n
	} else {
		r.unlink(n)
	}
	r.pushNewest(n)
	n.update(e, names)
	if len(n.s.Records) < MaxSessionRecords || e.Msg == "session" {
		n.s.Records = append(n.s.Records, e)
		n.bytes += size
		r.bytes += size
	} else {
		n.s.Dropped++
	}
	for r.bytes > r.maxBytes && r.oldest != n {
		r.evict(r.oldest)
	}
}

func (r *Recent) evict(n *recentNode) {
	r.unlink(n)
	delete(r.byID, n.s.ID)
	r.bytes -= n.bytes
}

func (r *Recent) unlink(n *recentNode) {
	if n.newer != nil {
		n.newer.older = n.older
	} else {
		r.newest = n.older
	}
	if n.older != nil {
		n.older.newer = n.newer
	} else {
		r.oldest = n.newer
	}
	n.newer, n.older = nil, nil
}

func (r *Recent) pushNewest(n *recentNode) {
	n.older = r.newest
	if r.newest != nil {
		r.newest.newer = n
	}
	r.newest = n
	if r.oldest == nil {
		r.oldest = n
	}
}

// update folds one record into the summary.
func (n *recentNode) update(e RecentRecord, names recentNames) {
	s := &n.s
	if !e.Time.IsZero() {
		s.Last = e.Time
		if s.Start.IsZero() {
			s.Start = e.Time
		}
	}
	if e.Client != "" && s.Client == "" {
		s.Client = e.Client
		s.Addr, _ = e.ClientAddr()
	}
	if e.Msg == "session" {
		s.Ended = true
	}
	if n.addHELO(names.helo) || n.addHELOs(names.helos) {
		s.HELO = strings.Join(n.helos, ", ")
	}
	if e.From != nil {
		s.From = *e.From
		if s.From == "" {
			s.From = "<>" // the null sender
		}
	}
	s.Rcpts = recentAppend(s.Rcpts, names.rcpt)
	for _, a := range names.rcpts {
		s.Rcpts = recentAppend(s.Rcpts, a)
	}
	rank := 0
	switch e.Msg {
	case "refused":
		s.Refused++
		rank = 3
	case "relayed":
		s.Relayed++
		rank = 2
	case "would refuse":
		s.Would++
		rank = 1
	case "session":
		if s.Reply == "" {
			s.Reply = e.extra("last_reply")
		}
	}
	if rank > n.decided {
		n.decided = rank
		s.Action, s.Rule, s.Reply, s.Stage = recentAction(e.Record), e.Rule, e.Reply, e.Stage
	}
}

func (n *recentNode) addHELO(name string) bool {
	l := len(n.helos)
	n.helos = recentAppend(n.helos, name)
	return len(n.helos) > l
}

func (n *recentNode) addHELOs(names []string) bool {
	added := false
	for _, name := range names {
		added = n.addHELO(name) || added
	}
	return added
}

// recentAppend adds a name to a session's list, once, up to
// MaxSessionRecords names.
func recentAppend(l []string, name string) []string {
	if name == "" || len(l) >= MaxSessionRecords || slices.Contains(l, name) {
		return l
	}
	return append(l, name)
}

// recentAction is the action a decision record shows: "would reject" for
// a rule in log mode.
func recentAction(r Record) string {
	if r.Msg == "would refuse" && r.Action != "" {
		return "would " + r.Action
	}
	return r.Action
}

func (e RecentRecord) extra(key string) string {
	for _, a := range e.Extra {
		if a.Key == key {
			return a.Value.String()
		}
	}
	return ""
}

// size estimates the memory a record holds.
func (e RecentRecord) size() int {
	n := 400 + len(e.Level) + len(e.Msg) + len(e.Session) + len(e.Client) + len(e.Stage) + len(e.Action) +
		len(e.Rule) + len(e.Reason) + len(e.Reply) + len(e.Where) + len(e.Mode) + len(e.Helo) + len(e.Rcpt)
	if e.From != nil {
		n += 16 + len(*e.From)
	}
	for _, c := range e.Checks {
		n += 96 + len(c.Check) + len(c.Outcome) + len(c.Reason) + len(c.Evidence)
	}
	for _, a := range e.Extra {
		n += 48 + len(a.Key)
		if a.Value.Kind() == slog.KindString {
			n += len(a.Value.String())
		}
	}
	return n
}

// RecentFilter selects sessions for the web page. Zero fields match
// everything.
type RecentFilter struct {
	Client netip.Prefix // the client's address is in it
	Action string       // a decision record's action: reject, tempfail, drop, accept, tag, or "would reject", ...
	Rule   string       // a decision record's rule, a path.Match pattern: "helo.*"
}

// Match reports whether the session passes the filter: its client is in
// the prefix, and one of its decision records (refused, relayed, would
// refuse) has the action and a rule that matches.
func (f RecentFilter) Match(s *RecentSession) bool {
	if f.Client.IsValid() && (!s.Addr.IsValid() || !f.Client.Contains(s.Addr)) {
		return false
	}
	if f.Action == "" && f.Rule == "" {
		return true
	}
	for i := range s.Records {
		r := &s.Records[i].Record
		if r.Msg != "refused" && r.Msg != "relayed" && r.Msg != "would refuse" {
			continue
		}
		if f.Action != "" && recentAction(*r) != f.Action {
			continue
		}
		if f.Rule != "" {
			if ok, _ := path.Match(f.Rule, r.Rule); !ok {
				continue
			}
		}
		return true
	}
	return false
}

// Sessions returns up to limit sessions that pass f, the most recently
// active first, and how many passed in all. limit <= 0 means all.
func (r *Recent) Sessions(f RecentFilter, limit int) ([]RecentSession, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []RecentSession
	total := 0
	for n := r.newest; n != nil; n = n.older {
		if !f.Match(&n.s) {
			continue
		}
		total++
		if limit <= 0 || len(out) < limit {
			out = append(out, n.s.snapshot())
		}
	}
	return out, total
}

// Session returns the session with the id, if it is still kept.
func (r *Recent) Session(id string) (RecentSession, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.byID[id]
	if !ok {
		return RecentSession{}, false
	}
	return n.s.snapshot(), true
}

// snapshot copies the summary; the slices are cut to their length, so the
// appends that follow never touch what the copy sees.
func (s *RecentSession) snapshot() RecentSession {
	c := *s
	c.Records = s.Records[:len(s.Records):len(s.Records)]
	c.Rcpts = s.Rcpts[:len(s.Rcpts):len(s.Rcpts)]
	return c
}

// Handler returns a slog.Handler that passes every record to next
// unchanged (when next is enabled for its level) and also files the
// records at level Info and above in r, whatever next's level: the page
// shows decisions even with log.level = "warn". Attributes are read
// straight from the slog.Record, without a JSON round trip; only the HELO
// and recipients are encoded, because Record keeps them as JSON.
func (r *Recent) Handler(next slog.Handler) slog.Handler {
	return &recentHandler{r: r, next: next}
}

type recentHandler struct {
	r       *Recent
	next    slog.Handler
	pre     []slog.Attr // top-level attributes added by WithAttrs
	grouped bool        // WithGroup was called: later attributes are not top-level fields
}

func (h *recentHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *recentHandler) Handle(ctx context.Context, rec slog.Record) error {
	var err error
	if h.next.Enabled(ctx, rec.Level) {
		err = h.next.Handle(ctx, rec)
	}
	if rec.Level >= slog.LevelInfo {
		e, names := h.convert(rec)
		h.r.add(e, names)
	}
	return err
}

func (h *recentHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(attrs)
	if !h.grouped {
		c.pre = append(slices.Clip(h.pre), attrs...)
	}
	return &c
}

func (h *recentHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	c.grouped = c.grouped || name != ""
	return &c
}

func (h *recentHandler) convert(rec slog.Record) (RecentRecord, recentNames) {
	e := RecentRecord{Record: Record{Time: rec.Time, Level: rec.Level.String(), Msg: rec.Message}}
	var names recentNames
	for _, a := range h.pre {
		e.set(a, &names)
	}
	if !h.grouped {
		rec.Attrs(func(a slog.Attr) bool {
			e.set(a, &names)
			return true
		})
	}
	return e, names
}

// set files one attribute: in its Record field, or in Extra. The HELO and
// recipients also go to names, as strings (valid during the log call
// only: they may be the caller's slices).
func (e *RecentRecord) set(a slog.Attr, names *recentNames) {
	v := a.Value.Resolve()
	switch a.Key {
	case "session":
		e.Session = v.String()
	case "client":
		e.Client = v.String()
	case "stage":
		e.Stage = v.String()
	case "action":
		e.Action = v.String()
	case "rule":
		e.Rule = v.String()
	case "reason":
		e.Reason = v.String()
	case "reply":
		e.Reply = v.String()
	case "where":
		e.Where = v.String()
	case "mode":
		e.Mode = v.String()
	case "from":
		s := v.String()
		e.From = &s
	case "helo":
		e.Helo = recentJSON(v)
		names.helo, names.helos = recentStrings(v)
	case "rcpt":
		e.Rcpt = recentJSON(v)
		names.rcpt, names.rcpts = recentStrings(v)
	case "score":
		e.Score = recentFloat(v)
	case "elapsed":
		e.Elapsed = recentFloat(v)
	case "checks":
		e.Checks = recentChecks(v)
	default:
		if a.Key == "" {
			return // slog drops empty attributes too
		}
		e.Extra = append(e.Extra, slog.Attr{Key: a.Key, Value: recentScalar(v)})
	}
}

// recentJSON encodes a string or a list of strings the way the JSON
// handler writes it (a copy: the logger's caller may reuse its slice).
func recentJSON(v slog.Value) json.RawMessage {
	if v.Kind() == slog.KindString {
		return recentJSONString(v.String())
	}
	b, err := json.Marshal(v.Any())
	if err != nil {
		return nil
	}
	return b
}

// recentJSONString quotes s as JSON in one allocation when nothing in it
// needs escaping (the common case), else as encoding/json does.
func recentJSONString(s string) json.RawMessage {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s)
			return b
		}
	}
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// recentStrings returns a string value, or the list a value holds.
func recentStrings(v slog.Value) (string, []string) {
	if v.Kind() == slog.KindString {
		return v.String(), nil
	}
	if l, ok := v.Any().([]string); ok {
		return "", l
	}
	return "", recentSplit(stringOrList(recentJSON(v)))
}

func recentFloat(v slog.Value) float64 {
	switch v.Kind() {
	case slog.KindFloat64:
		return v.Float64()
	case slog.KindInt64:
		return float64(v.Int64())
	case slog.KindUint64:
		return float64(v.Uint64())
	case slog.KindDuration:
		return v.Duration().Seconds()
	}
	f, _ := strconv.ParseFloat(v.String(), 64)
	return f
}

// recentChecks copies the check results: the caller's slice may change
// after the line is written.
func recentChecks(v slog.Value) []checks.Result {
	switch x := v.Any().(type) {
	case []checks.Result:
		return slices.Clone(x)
	case checks.Result:
		return []checks.Result{x}
	}
	b, err := json.Marshal(v.Any())
	if err != nil {
		return nil
	}
	var out []checks.Result
	_ = json.Unmarshal(b, &out)
	return out
}

// recentScalar keeps a value the logger's caller cannot change later: the
// scalar kinds as they are, anything else as the text the JSON handler
// would write.
func recentScalar(v slog.Value) slog.Value {
	switch v.Kind() {
	case slog.KindAny:
		x := v.Any()
		if err, ok := x.(error); ok {
			return slog.StringValue(err.Error())
		}
		if b, err := json.Marshal(x); err == nil {
			return slog.StringValue(string(b))
		}
		return slog.StringValue(fmt.Sprint(x))
	case slog.KindGroup:
		return slog.StringValue(v.String())
	}
	return v
}
