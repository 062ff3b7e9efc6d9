package checks

import (
	"bytes"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"

	"github.com/mxguard/mxguard/message"
)

// unfold joins a folded field back into one line and drops the CRLF.
func unfoldField(f string) string {
	return strings.ReplaceAll(strings.TrimSuffix(f, "\r\n"), "\r\n", "")
}

// checkField wants f to be exactly one well-formed header field: lines
// of at most max bytes, CRLF only as folding or at the end.
func checkField(t *testing.T, f string, max int) {
	t.Helper()
	if !strings.HasSuffix(f, "\r\n") {
		t.Errorf("no final CRLF: %q", f)
	}
	lines := strings.Split(strings.TrimSuffix(f, "\r\n"), "\r\n")
	for i, l := range lines {
		if i > 0 && !strings.HasPrefix(l, "\t") {
			t.Errorf("line %d is not a continuation: %q", i, l)
		}
		if len(l) > max {
			t.Errorf("line %d has %d bytes: %q", i, len(l), l)
		}
		for _, c := range l {
			if c < 0x20 && c != '\t' || c == 0x7f {
				t.Errorf("control character %q in %q", c, l)
			}
		}
	}
	h, off, err := message.ParseHeader(strings.NewReader(f + "\r\n"))
	if err != nil || len(h.Fields) != 1 || off != int64(len(f)+2) {
		t.Errorf("%q does not parse as one field: %v", f, err)
	}
}

func TestAuthenticationResults(t *testing.T) {
	spf := &SPFResult{Result: "pass", Domain: "example.org", Identity: "mailfrom", Sender: "alice@example.org", HELO: "mail.example.org"}
	dkim := []DKIMSignature{{Domain: "example.org", Selector: "sel", Result: "pass"}}
	dmarc := &DMARCResult{Result: "pass", Domain: "example.org"}
	got := AuthenticationResults("mx.example.com", spf, dkim, dmarc)
	want := "Authentication-Results: mx.example.com; spf=pass\r\n" +
		"\tsmtp.mailfrom=alice@example.org; dkim=pass header.d=example.org header.s=sel;\r\n" +
		"\tdmarc=pass header.from=example.org\r\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	checkField(t, got, 78)

	cases := []struct {
		name  string
		spf   *SPFResult
		dkim  []DKIMSignature
		dmarc *DMARCResult
		want  string // unfolded value
	}{
		{"nothing", nil, nil, nil, "mx.example.com; dkim=none"},
		{"helo identity", &SPFResult{Result: "none", Identity: "helo", HELO: "mail.example.org"}, nil, nil,
			"mx.example.com; spf=none smtp.helo=mail.example.org; dkim=none"},
		{"two signatures", nil, []DKIMSignature{{Domain: "a.example", Selector: "s1", Result: "fail"}, {Domain: "b.example", Selector: "s2", Result: "temperror"}}, nil,
			"mx.example.com; dkim=fail header.d=a.example header.s=s1; dkim=temperror header.d=b.example header.s=s2"},
		{"dmarc fail", nil, nil, &DMARCResult{Result: "fail", Domain: "example.org", Policy: "reject"},
			"mx.example.com; dkim=none; dmarc=fail header.from=example.org"},
		{"quoted local part", &SPFResult{Result: "softfail", Identity: "mailfrom", Sender: `"john doe"@example.org`}, nil, nil,
			`mx.example.com; spf=softfail smtp.mailfrom="\"john doe\"@example.org"; dkim=none`},
	}
	for _, c := range cases {
		f := AuthenticationResults("mx.example.com", c.spf, c.dkim, c.dmarc)
		checkField(t, f, 78)
		// Folding turned some spaces into tabs.
		if got := strings.ReplaceAll(unfoldField(f), "\t", " "); strings.TrimPrefix(got, "Authentication-Results: ") != c.want {
			t.Errorf("%s:\n%q\nwant\n%q", c.name, got, "Authentication-Results: "+c.want)
		}
	}

	// What go-msgauth reads back is what went in.
	id, results, err := authres.Parse(strings.TrimPrefix(unfoldField(got), "Authentication-Results:"))
	if err != nil || id != "mx.example.com" || len(results) != 3 {
		t.Fatalf("Parse: %q %v %v", id, results, err)
	}
	if r, ok := results[0].(*authres.SPFResult); !ok || r.Value != authres.ResultPass || r.From != "alice@example.org" {
		t.Errorf("spf %+v", results[0])
	}
	if r, ok := results[1].(*authres.DKIMResult); !ok || r.Value != authres.ResultPass || r.Domain != "example.org" {
		t.Errorf("dkim %+v", results[1])
	}
	if r, ok := results[2].(*authres.DMARCResult); !ok || r.Value != authres.ResultPass || r.From != "example.org" {
		t.Errorf("dmarc %+v", results[2])
	}
	if message.AuthservID(strings.TrimPrefix(unfoldField(got), "Authentication-Results:")) != "mx.example.com" {
		t.Error("our own authserv-id does not read back")
	}
}

// Client text cannot break out of the field, whatever it holds.
func TestAuthResultsHostile(t *testing.T) {
	hostile := []string{
		"evil@example.org\r\nX-Injected: yes",
		"evil@example.org\nAuthentication-Results: mx.example.com; dkim=pass",
		"a\x00b\x07c\x7f@example.org",
		`trail\@example.org`,
		`x"; dkim=pass header.d=bank.example; x="@example.org`,
		"\u202eevil@example.org",
		"\xff\xfe@example.org",
		strings.Repeat("a", 2000) + "@example.org",
		"(comment@example.org",
	}
	for _, h := range hostile {
		spf := &SPFResult{Result: "fail", Identity: "mailfrom", Sender: h, HELO: h, Client: netip.MustParseAddr("2001:db8::1"), Explanation: h}
		sigs := []DKIMSignature{{Domain: h, Selector: h, Result: "fail"}}
		dm := &DMARCResult{Result: "fail", Domain: h}
		for _, f := range []string{
			AuthenticationResults("mx.example.com", spf, sigs, dm),
			ReceivedSPF("mx.example.com", spf),
			ReceivedSPF(h, &SPFResult{Result: "permerror", Identity: "helo", HELO: h, Explanation: h}),
		} {
			checkField(t, f, 300)
			if strings.Contains(f, "X-Injected") && strings.Contains(f, "\r\nX-") {
				t.Errorf("injected: %q", f)
			}
		}
		// The forged dkim=pass stays inside a quoted string, and even a
		// parser that ignores quotes finds only our three results.
		f := unfoldField(AuthenticationResults("mx.example.com", spf, sigs, dm))
		if strings.Count(f, `"`)%2 != 0 || strings.Count(f, `\`) != strings.Count(f, `\"`) {
			t.Errorf("quoting broken: %q", f)
		}
		_, results, _ := authres.Parse(strings.TrimPrefix(f, "Authentication-Results:"))
		if len(results) != 3 {
			t.Errorf("%d results in %q", len(results), f)
		}
		for _, r := range results {
			switch r := r.(type) {
			case *authres.SPFResult:
			case *authres.DKIMResult:
				if r.Value != authres.ResultFail {
					t.Errorf("forged result %+v", r)
				}
			case *authres.DMARCResult:
				if r.Value != authres.ResultFail {
					t.Errorf("forged result %+v", r)
				}
			default:
				t.Errorf("unexpected result %#v in %q", r, f)
			}
		}
	}
}

func TestReceivedSPF(t *testing.T) {
	client := netip.MustParseAddr("192.0.2.1")
	cases := []struct {
		r    SPFResult
		want string // unfolded
	}{
		{SPFResult{Result: "pass", Identity: "mailfrom", Client: client, Sender: "alice@example.org", HELO: "mail.example.org"},
			"Received-SPF: pass (mx.example.com: domain of alice@example.org designates 192.0.2.1 as permitted sender)" +
				" client-ip=192.0.2.1; envelope-from=\"alice@example.org\"; helo=mail.example.org; receiver=mx.example.com; identity=mailfrom;"},
		{SPFResult{Result: "fail", Identity: "helo", Client: netip.MustParseAddr("2001:db8::1"), HELO: "mail.example.org"},
			"Received-SPF: fail (mx.example.com: domain of postmaster@mail.example.org does not designate 2001:db8::1 as permitted sender)" +
				` client-ip="2001:db8::1"; helo=mail.example.org; receiver=mx.example.com; identity=helo;`},
		{SPFResult{Result: "permerror", Identity: "mailfrom", Client: client, Sender: "a@example.org", Explanation: "void lookup limit reached"},
			"Received-SPF: permerror (mx.example.com: domain of a@example.org has an unusable SPF record)" +
				` client-ip=192.0.2.1; envelope-from="a@example.org"; problem="void lookup limit reached"; receiver=mx.example.com; identity=mailfrom;`},
		{SPFResult{Result: "temperror", Identity: "mailfrom", Client: client, Sender: "a@example.org", Explanation: "lookup a on 10.0.0.1:53: i/o timeout"},
			"Received-SPF: temperror (mx.example.com: error in processing during lookup of a@example.org)" +
				` client-ip=192.0.2.1; envelope-from="a@example.org"; receiver=mx.example.com; identity=mailfrom;`},
		{SPFResult{Result: "softfail", Identity: "mailfrom", Client: client, Sender: `"x y"@example.org`},
			"Received-SPF: softfail (mx.example.com: domain of transitioning \"x y\"@example.org does not designate 192.0.2.1 as permitted sender)" +
				` client-ip=192.0.2.1; envelope-from="\"x y\"@example.org"; receiver=mx.example.com; identity=mailfrom;`},
	}
	for _, c := range cases {
		f := ReceivedSPF("mx.example.com", &c.r)
		checkField(t, f, 78)
		// Folding turned some spaces into tabs.
		if got := strings.ReplaceAll(unfoldField(f), "\t", " "); got != c.want {
			t.Errorf("got\n%q\nwant\n%q", got, c.want)
		}
	}
}

func TestFoldField(t *testing.T) {
	long := strings.Repeat("x", 100)
	cases := []struct{ value, want string }{
		{"short", "N: short\r\n"},
		{"a " + long + " b", "N: a\r\n\t" + long + "\r\n\tb\r\n"},
		{long, "N: " + long + "\r\n"}, // the first word never moves
		{`k="` + strings.Repeat("q ", 50) + `"`, `N: k="` + strings.Repeat("q ", 50) + "\"\r\n"},
		{"a  \t b", "N: a b\r\n"},
	}
	for _, c := range cases {
		if got := foldField("N", c.value); got != c.want {
			t.Errorf("foldField(%q) =\n%q, want\n%q", c.value, got, c.want)
		}
	}
}

// The DATA stage end to end: spool the message, verify it, drop the
// forged Authentication-Results, prepend ours, and relay a copy whose
// signature still verifies.
func TestAuthPipeline(t *testing.T) {
	k := dkimKeys()
	res, _ := authFixture(t, dkimZone()+`
$ORIGIN example.test.
@      TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc TXT "v=DMARC1; p=reject"
`)
	ctx := t.Context()
	signed := dkimSign(t, dkimMessage, "example.test", "rsa", k.rsa, dkim.CanonicalizationRelaxed)
	thirdParty := "Authentication-Results: relay.example.net; spf=pass smtp.mailfrom=x@example.net\r\n"
	in := "Authentication-Results: MX.example.com; dkim=pass header.d=bank.example\r\n" + thirdParty + signed

	spool := message.NewSpool(64, t.TempDir()) // small: the message goes to disk
	defer spool.Close()
	if _, err := spool.ReadFrom(strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	h, off, err := message.ParseHeader(spool.Reader())
	if err != nil {
		t.Fatal(err)
	}
	from, err := message.FromDomains(h)
	if err != nil {
		t.Fatal(err)
	}
	sr := (&SPF{Resolver: res}).Check(ctx, netip.MustParseAddr("192.0.2.1"), "mail.example.test", "alice@example.test")
	dk := (&DKIM{Resolver: res}).Verify(ctx, spool.Reader())
	dm := (&DMARC{Resolver: res}).Check(ctx, from, sr, dk.Signatures)
	if sr.Result != "pass" || len(dk.Signatures) != 1 || dk.Signatures[0].Result != "pass" || dm.Result != "pass" {
		t.Fatalf("spf %s, dkim %+v, dmarc %s (%s)", sr.Result, dk.Signatures, dm.Result, dm.Check.Reason)
	}

	h.Remove(func(name, value string) bool {
		return strings.EqualFold(name, "Authentication-Results") && strings.EqualFold(message.AuthservID(value), "mx.example.com")
	})
	ar := AuthenticationResults("mx.example.com", &sr, dk.Signatures, &dm)
	var out bytes.Buffer
	body := io.NewSectionReader(spool.Reader(), off, spool.Size()-off)
	if err := message.WriteWithHeaders(&out, []byte(ar), h, body); err != nil {
		t.Fatal(err)
	}
	if want := ar + thirdParty + signed; out.String() != want {
		t.Fatalf("relayed\n%q\nwant\n%q", out.String(), want)
	}
	if again := (&DKIM{Resolver: res}).Verify(ctx, &out); again.Signatures[0].Result != "pass" {
		t.Errorf("relayed copy: %+v", again.Signatures)
	}
}

// oracleAuthenticationResults is AuthenticationResults as it was built on
// go-msgauth's formatter, kept as the reference for our own.
func oracleAuthenticationResults(authservID string, spf *SPFResult, dkim []DKIMSignature, dmarc *DMARCResult) string {
	var results []authres.Result
	if spf != nil && spf.Result != "" {
		r := &authres.SPFResult{Value: authres.ResultValue(spf.Result)}
		if spf.Identity == "helo" {
			r.Helo = headerSafe(spf.HELO)
		} else {
			r.From = headerSafe(spf.Sender)
		}
		results = append(results, r)
	}
	if len(dkim) == 0 {
		results = append(results, &authres.DKIMResult{Value: authres.ResultNone})
	}
	for _, s := range dkim {
		results = append(results, &authres.GenericResult{
			Method: "dkim",
			Value:  authres.ResultValue(s.Result),
			Params: map[string]string{"header.d": headerSafe(s.Domain), "header.s": headerSafe(s.Selector)},
		})
	}
	if dmarc != nil && dmarc.Result != "" {
		results = append(results, &authres.DMARCResult{Value: authres.ResultValue(dmarc.Result), From: headerSafe(dmarc.Domain)})
	}
	return foldField("Authentication-Results", authres.Format(headerSafe(authservID), results))
}

func authresCases(v string) [][]any {
	spfs := []*SPFResult{nil, {Result: "pass", Identity: "mailfrom", Sender: v}, {Result: "none", Identity: "helo", HELO: v}, {Result: "pass", Identity: "mailfrom"}}
	sigs := [][]DKIMSignature{nil, {{Domain: v, Selector: "sel", Result: "pass"}}, {{Domain: "", Selector: v, Result: "fail"}, {Domain: v, Selector: "", Result: "pass"}}}
	dmarcs := []*DMARCResult{nil, {Result: "pass", Domain: v}, {Result: "", Domain: v}}
	var cs [][]any
	for _, s := range spfs {
		for _, d := range sigs {
			for _, m := range dmarcs {
				cs = append(cs, []any{s, d, m})
			}
		}
	}
	return cs
}

var authresValues = []string{
	"alice@example.org", "example.org", "", "a b", `a"b`, `a\b`, "a;b", "a=b", "(c)", "x@[192.0.2.1]", "ünï@exämple.org",
	"a\tb", "a\r\nb", "\x00", "<a@b>", "a,b:c/d?e", "#$%&'*+,./-@[]^_`{|}~", strings.Repeat("long", 100) + "@example.org",
	`x"; dkim=pass header.d=bank.example; x="@example.org`, "\u202eevil", "\xff\xfe",
}

func TestAuthresFormatAsGoMsgauth(t *testing.T) {
	for _, v := range authresValues {
		for _, c := range authresCases(v) {
			spf, sigs, dm := c[0].(*SPFResult), c[1].([]DKIMSignature), c[2].(*DMARCResult)
			got, want := AuthenticationResults("mx.example.com", spf, sigs, dm), oracleAuthenticationResults("mx.example.com", spf, sigs, dm)
			if got != want {
				t.Errorf("value %q:\n got %q\nwant %q", v, got, want)
			}
		}
	}
}

func FuzzAuthresFormat(f *testing.F) {
	for _, v := range authresValues {
		f.Add(v, "mx.example.com")
	}
	f.Fuzz(func(t *testing.T, v, id string) {
		for _, c := range authresCases(v) {
			spf, sigs, dm := c[0].(*SPFResult), c[1].([]DKIMSignature), c[2].(*DMARCResult)
			if got, want := AuthenticationResults(id, spf, sigs, dm), oracleAuthenticationResults(id, spf, sigs, dm); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		}
	})
}
