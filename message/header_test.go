package message

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

const sample = "Received: from a by b;\r\n" +
	"\tMon, 1 Jan 2026 00:00:00 +0000\r\n" +
	"From: Alice <alice@example.org>\r\n" +
	"Subject: folded\r\n" +
	"  twice\r\n" +
	" and again\r\n" +
	"subject: second\r\n" +
	"\r\n" +
	"Body line\r\n" +
	"\r\n" +
	"From: not a header\r\n"

func TestParseHeader(t *testing.T) {
	cases := []struct {
		name, msg string
		names     []string // field names
		end       string   // the empty line
		body      string
	}{
		{"crlf", sample, []string{"Received", "From", "Subject", "subject"}, "\r\n", "Body line\r\n\r\nFrom: not a header\r\n"},
		{"bare lf", "A: 1\nB: 2\n x\n\nbody\n", []string{"A", "B"}, "\n", "body\n"},
		{"mixed", "A: 1\r\nB: 2\n\r\nbody", []string{"A", "B"}, "\r\n", "body"},
		{"no body", "A: 1\r\nB: 2\r\n", []string{"A", "B"}, "", ""},
		{"no final line end", "A: 1\r\nB: 2", []string{"A", "B"}, "", ""},
		{"empty body", "A: 1\r\n\r\n", []string{"A"}, "\r\n", ""},
		{"empty message", "", nil, "", ""},
		{"only the empty line", "\r\nbody", nil, "\r\n", "body"},
		{"not a field", "From foo Mon Jan 1\nA: 1\n\n", []string{"From foo Mon Jan 1", "A"}, "\n", ""},
		{"space before colon", "From : x\r\n\r\n", []string{"From"}, "\r\n", ""},
		{"leading continuation", " x: 1\r\nA: 2\r\n\r\n", []string{"x", "A"}, "\r\n", ""},
		{"white space line is folding", "A: 1\r\n \r\n\r\nb", []string{"A"}, "\r\n", "b"},
		{"lone CR is not a line end", "A: 1\rB: 2\r\n\r\n", []string{"A"}, "\r\n", ""},
		{"NUL kept", "A: \x00\r\n\r\n", []string{"A"}, "\r\n", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, off, err := ParseHeader(strings.NewReader(c.msg))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, f := range h.Fields {
				names = append(names, f.Name)
				if got := c.msg[f.Offset : f.Offset+int64(len(f.Raw))]; got != string(f.Raw) {
					t.Errorf("field %q: Offset %d does not point at it", f.Name, f.Offset)
				}
			}
			if !slices.Equal(names, c.names) {
				t.Errorf("names %q, want %q", names, c.names)
			}
			if string(h.End) != c.end {
				t.Errorf("End %q, want %q", h.End, c.end)
			}
			if got := c.msg[off:]; got != c.body {
				t.Errorf("body %q, want %q", got, c.body)
			}
			if h.Len() != off {
				t.Errorf("Len %d, body offset %d", h.Len(), off)
			}
		})
	}
}

func TestValues(t *testing.T) {
	h, _, err := ParseHeader(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Values("SUBJECT"); !slices.Equal(got, []string{"folded  twice and again", "second"}) {
		t.Errorf("Subject %q", got)
	}
	if got := h.Values("received"); !slices.Equal(got, []string{"from a by b;\tMon, 1 Jan 2026 00:00:00 +0000"}) {
		t.Errorf("Received %q", got)
	}
	if got := h.Values("X-Missing"); got != nil {
		t.Errorf("X-Missing %q", got)
	}
}

// ParseHeader on a *bufio.Reader leaves the body in it.
func TestParseHeaderBufio(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader(sample), 16)
	if _, _, err := ParseHeader(br); err != nil {
		t.Fatal(err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "Body line\r\n\r\nFrom: not a header\r\n" {
		t.Errorf("left %q", rest)
	}
}

func TestParseHeaderLimits(t *testing.T) {
	cases := []struct {
		name string
		r    io.Reader
		ok   bool
	}{
		{"fields at the limit", strings.NewReader(strings.Repeat("A: 1\r\n", MaxHeaderFields) + "\r\n"), true},
		{"one field too many", strings.NewReader(strings.Repeat("A: 1\r\n", MaxHeaderFields+1) + "\r\n"), false},
		{"one endless line", io.MultiReader(strings.NewReader("A: "), neverEnding('x')), false},
		{"endless folding", io.MultiReader(strings.NewReader("A: 1\r\n"), neverEnding(' ')), false},
		{"bytes at the limit", strings.NewReader("A: " + strings.Repeat("x", MaxHeaderBytes-7) + "\r\n\r\n"), true},
		{"a byte over", strings.NewReader("A: " + strings.Repeat("x", MaxHeaderBytes-6) + "\r\n\r\n"), false},
	}
	for _, c := range cases {
		_, _, err := ParseHeader(c.r)
		if c.ok && err != nil || !c.ok && !errors.Is(err, ErrHeaderTooLarge) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// neverEnding is an endless stream of one byte.
type neverEnding byte

func (b neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

func TestRemoveAndWrite(t *testing.T) {
	msg := "Return-Path: <a@example.org>\r\n" +
		"Authentication-Results: mx.example.com; dkim=pass\r\n" +
		"Authentication-Results: mx.other.example;\r\n" +
		"\tspf=pass smtp.mailfrom=a@example.org\r\n" +
		"authentication-results:   (forged) MX.Example.COM 1 ;\r\n spf=pass\r\n" +
		"Subject: hi\r\n" +
		"\r\n" +
		"Authentication-Results: mx.example.com; in the body, untouched\r\n"
	h, off, err := ParseHeader(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	h.Remove(func(name, value string) bool {
		return strings.EqualFold(name, "Authentication-Results") && strings.EqualFold(AuthservID(value), "mx.example.com")
	})
	var out bytes.Buffer
	ours := "Authentication-Results: mx.example.com; spf=pass\r\n"
	if err := WriteWithHeaders(&out, []byte(ours), h, strings.NewReader(msg[off:])); err != nil {
		t.Fatal(err)
	}
	want := ours +
		"Return-Path: <a@example.org>\r\n" +
		"Authentication-Results: mx.other.example;\r\n" +
		"\tspf=pass smtp.mailfrom=a@example.org\r\n" +
		"Subject: hi\r\n" +
		"\r\n" +
		"Authentication-Results: mx.example.com; in the body, untouched\r\n"
	if out.String() != want {
		t.Errorf("got\n%q\nwant\n%q", out.String(), want)
	}
}

// Without removals, writing gives back the input exactly, whatever it is.
func TestWriteByteExact(t *testing.T) {
	for _, msg := range []string{
		sample,
		"A: 1\nB: 2\n x\n\nbody\n",
		"A: 1\r\nB: 2", // no body, no final line end
		"",
		"\r\n\r\n\r\n",
		"A:\r\n\r\n\x00\xff binary\r\n.\r\n",
		"From foo\nA: 1\n\n",
	} {
		checkRoundTrip(t, []byte(msg))
	}
}

func checkRoundTrip(t *testing.T, msg []byte) {
	t.Helper()
	h, off, err := ParseHeader(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("%q: %v", msg, err)
	}
	var out bytes.Buffer
	if err := WriteWithHeaders(&out, nil, h, bytes.NewReader(msg[off:])); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), msg) {
		t.Fatalf("round trip of %q gave %q", msg, out.Bytes())
	}
}

func FuzzParseHeader(f *testing.F) {
	for _, s := range []string{
		sample,
		"A: 1\nB: 2\n x\n\nbody\n",
		"A: 1\r\nB: 2",
		"",
		"\r\n",
		" x: leading continuation\r\n\r\n",
		"From: \"a\" <a@example.org>, (c) b@[192.0.2.1]\r\n\r\n",
		"From: undisclosed:;\r\n\r\n",
		"Authentication-Results: (c) \"mx\\\".example\" 1; none\r\n\r\n",
		"A: 1\rB\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		h, off, err := ParseHeader(bytes.NewReader(msg))
		if err != nil {
			t.Fatalf("%v", err) // inputs this small are never too large
		}
		if off < 0 || off > int64(len(msg)) || h.Len() != off {
			t.Fatalf("body offset %d, Len %d, message %d bytes", off, h.Len(), len(msg))
		}
		for _, fl := range h.Fields {
			if !bytes.Equal(msg[fl.Offset:fl.Offset+int64(len(fl.Raw))], fl.Raw) {
				t.Fatalf("field at %d does not match the message", fl.Offset)
			}
			if v := fl.Value(); strings.ContainsRune(v, '\n') {
				t.Fatalf("unfolded value %q has a line feed", v)
			}
		}
		checkRoundTrip(t, msg)
		// Whatever is in there, these must not panic.
		FromDomains(h)
		for _, v := range h.Values("Authentication-Results") {
			AuthservID(v)
		}
		h.Remove(func(name, _ string) bool { return len(name)%2 == 0 })
	})
}
