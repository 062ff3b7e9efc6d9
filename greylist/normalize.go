package greylist

import (
	"regexp"
	"strings"
)

// verpDigits matches the numbers in a local part that mailing lists and
// bulk senders vary per message (VERP), as postgrey's s/\b\d+\b/#/g.
var verpDigits = regexp.MustCompile(`\b[0-9]+\b`)

// NormalizeSender reduces an envelope sender to what stays the same from
// one message of a sender to the next, as postgrey does: lower case, the
// BATV "prvs=TAG=" wrapper removed, a "+extension" removed, and numbers
// standing alone in the local part replaced by "#". The null sender stays
// "".
func NormalizeSender(addr string) string {
	addr = strings.ToLower(strings.TrimSpace(addr))
	addr = strings.TrimSuffix(strings.TrimPrefix(addr, "<"), ">")
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return addr
	}
	user, domain := addr[:at], addr[at+1:]
	user = stripBATV(user)
	if plus := strings.IndexByte(user, '+'); plus >= 0 {
		user = user[:plus]
	}
	user = verpDigits.ReplaceAllString(user, "#")
	return user + "@" + domain
}

// stripBATV returns the original local part of a BATV address
// "prvs=TAG=user", or "prvs=user=TAG" as some senders write it, where TAG
// is ten characters: a key digit, three of day and six of hash.
func stripBATV(user string) string {
	if !strings.HasPrefix(user, "prvs=") {
		return user
	}
	a := strings.Split(user, "=")
	if len(a) != 3 {
		return user
	}
	switch tag1, tag2 := isBATVTag(a[1]), isBATVTag(a[2]); {
	case tag1 && !tag2:
		return a[2]
	case tag2 && !tag1:
		return a[1]
	default:
		return a[2] // the standard order
	}
}

// isBATVTag reports whether s starts with ten letters or digits.
func isBATVTag(s string) bool {
	if len(s) < 10 {
		return false
	}
	for _, c := range []byte(s[:10]) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// normalizeRcpt is the recipient as postgrey keys it: lower case.
func normalizeRcpt(addr string) string {
	addr = strings.ToLower(strings.TrimSpace(addr))
	return strings.TrimSuffix(strings.TrimPrefix(addr, "<"), ">")
}
