package mailsink

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"
)

// envelope is the content of <id>.json.
type envelope struct {
	ID          string            `json:"id"`
	Session     int               `json:"session"`
	RemoteAddr  string            `json:"remote_addr,omitempty"`
	ProxySource string            `json:"proxy_source,omitempty"`
	XCLIENT     map[string]string `json:"xclient,omitempty"`
	Helo        string            `json:"helo"`
	From        string            `json:"from"`
	MailParams  string            `json:"mail_params,omitempty"`
	To          []string          `json:"to"`
	RcptParams  []string          `json:"rcpt_params"`
	Size        int               `json:"size"`
	Received    time.Time         `json:"received"`
}

// writeFiles writes m to Dir as <id>.json then <id>.eml, each through a
// temporary file renamed into place, so readers never see partial files and
// an .eml is only visible once its envelope is.
func (s *Server) writeFiles(si *SessionInfo, m *Message) error {
	env := envelope{
		ID:         m.ID,
		Session:    m.Session,
		XCLIENT:    m.XCLIENT,
		Helo:       m.Helo,
		From:       m.From,
		MailParams: m.MailParams,
		To:         m.To,
		RcptParams: m.RcptParams,
		Size:       len(m.Data),
		Received:   m.Received,
	}
	if si.RemoteAddr != nil {
		env.RemoteAddr = si.RemoteAddr.String()
	}
	if m.ProxySource != nil {
		env.ProxySource = m.ProxySource.String()
	}
	js, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return err
	}
	js = append(js, '\n')
	if err := writeAtomic(s.Dir, m.ID+".json", js); err != nil {
		return err
	}
	return writeAtomic(s.Dir, m.ID+".eml", m.Data)
}

// writeAtomic writes data to dir/name via a hidden temporary file in dir and
// a rename. It does not fsync: it guards readers against partial files, not
// the files against power loss.
func writeAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
