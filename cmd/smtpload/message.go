package main

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// content is the message every transaction sends, built once. Only a small
// prefix is written per message: its Message-ID (and, with -dkim-each, its
// own DKIM-Signature); the rest is shared and already dot-stuffed and
// terminated, ready for the socket.
type content struct {
	shared []byte // header fields after the Message-ID, blank line, body; stuffed; ends CRLF "." CRLF
	size   int    // bytes per message as sent, before stuffing
	msgID  string // "@runid.helo>\r\n", the tail of every Message-ID field
	algo   string // DKIM algorithm, "" = unsigned

	// With -dkim-each: the signer, and the message after the Message-ID
	// unstuffed, to sign with each Message-ID.
	signer *dkimSigner
	plain  []byte
}

// signedNames are the fields signed: the ones a verifier cares about. The
// Message-ID is signed only with -dkim-each, where it is signed per message.
var signedNames = []string{"From", "To", "Subject", "Date", "MIME-Version", "Content-Type"}

func buildContent(cfg Config, now time.Time) (*content, error) {
	m := &content{
		msgID: "@" + strconv.FormatInt(now.UnixNano(), 36) + "." + cfg.Helo + ">\r\n",
	}
	var head bytes.Buffer
	fmt.Fprintf(&head, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&head, "From: <%s>\r\n", cfg.From)
	fmt.Fprintf(&head, "To: %s\r\n", "<"+strings.Join(cfg.To, ">,\r\n <")+">")
	head.WriteString("Subject: smtpload test message\r\n")
	head.WriteString("MIME-Version: 1.0\r\n")
	head.WriteString("Content-Type: text/plain; charset=us-ascii\r\n")
	head.WriteString("\r\n")
	perMsg := len("Message-ID: <") + seqDigits + len(m.msgID)

	var signer *dkimSigner
	sigLen := 0
	if cfg.DKIMKey != "" {
		domain := cfg.DKIMDomain
		if domain == "" {
			_, domain, _ = strings.Cut(cfg.From, "@")
		}
		var err error
		if signer, err = loadDKIMKey(cfg.DKIMKey, domain, cfg.DKIMSelector); err != nil {
			return nil, err
		}
		m.algo = signer.algo
		// The signature's length, for sizing the body: sign a stand-in
		// of the right shape.
		probe := append(m.prefixFor(nil, 0), head.Bytes()...)
		sig, err := signer.sign(probe, m.names(cfg.DKIMEach))
		if err != nil {
			return nil, err
		}
		sigLen = len(sig)
	}

	body := makeBody(cfg.Size - perMsg - sigLen - head.Len())
	plain := append(head.Bytes(), body...)
	var shared []byte
	switch {
	case signer != nil && cfg.DKIMEach:
		m.signer, m.plain = signer, plain
	case signer != nil:
		sig, err := signer.sign(plain, signedNames)
		if err != nil {
			return nil, err
		}
		shared = append(shared, sig...)
		sigLen = len(sig)
	}
	shared = append(shared, plain...)
	m.size = perMsg + len(shared)
	if m.signer != nil {
		m.size += sigLen // about: the signature's length varies a little
	}
	m.shared = dotStuff(shared)
	return m, nil
}

func (m *content) names(each bool) []string {
	if each {
		return append([]string{"Message-ID"}, signedNames...)
	}
	return signedNames
}

// makeBody returns about n bytes of text in CRLF lines, one of them starting
// with a dot (so the dot-stuffing paths on the way are exercised).
func makeBody(n int) []byte {
	var b bytes.Buffer
	b.WriteString("This is a test message from smtpload.\r\n")
	b.WriteString(".A line that starts with a dot.\r\n")
	line := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 2)[:76] + "\r\n"
	for b.Len()+len(line) <= n {
		b.WriteString(line)
	}
	if rest := n - b.Len(); rest >= 3 {
		b.WriteString(line[:rest-2])
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// dotStuff prepares text (CRLF lines) for DATA: a dot doubled at the start
// of each line, a final CRLF if missing, and the terminating "." CRLF.
func dotStuff(text []byte) []byte {
	out := make([]byte, 0, len(text)+len(text)/64+8)
	bol := true
	for _, c := range text {
		if bol && c == '.' {
			out = append(out, '.')
		}
		out = append(out, c)
		bol = c == '\n'
	}
	if !bol {
		out = append(out, "\r\n"...)
	}
	return append(out, ".\r\n"...)
}

// appendPrefix appends what is particular to message seq: its Message-ID
// field and, with -dkim-each, its own DKIM-Signature over it.
func (m *content) appendPrefix(dst []byte, seq uint64) ([]byte, error) {
	if m.signer == nil {
		return m.prefixFor(dst, seq), nil
	}
	id := m.prefixFor(nil, seq)
	sig, err := m.signer.sign(append(id, m.plain...), m.names(true))
	if err != nil {
		return nil, err
	}
	return append(append(dst, sig...), id...), nil
}

func (m *content) prefixFor(dst []byte, seq uint64) []byte {
	dst = append(dst, "Message-ID: <"...)
	dst = appendSeq(dst, seq)
	return append(dst, m.msgID...)
}

// seqDigits is the width of the sequence number in Message-IDs: fixed, so
// that every message has the same size.
const seqDigits = 10

func appendSeq(dst []byte, seq uint64) []byte {
	var b [20]byte
	n := strconv.AppendUint(b[:0], seq, 10)
	for i := len(n); i < seqDigits; i++ {
		dst = append(dst, '0')
	}
	return append(dst, n...)
}
