package browsertest

import (
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The WebChat keeps its transcript per session: closed and reopened on the
// same session, it shows the conversation where it stopped, and a new
// session starts empty.
func TestBrowserTranscriptSurvivesReopen(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	session := sessionID(t)
	chat := openChat(t, s, session)
	chat.say("primeira mensagem")
	chat.say("segunda mensagem")
	lines := func(tb *tab) []string {
		return eval[[]string](tb, `[...document.querySelectorAll('#messages li')].map(li => li.className.split(' ')[0] + ':' + li.textContent)`)
	}
	before := lines(chat)
	chat.close()

	again := openChat(t, s, session)
	got := lines(again)
	if len(got) < len(before) {
		t.Fatalf("reopened: %q; want the earlier %q first", got, before)
	}
	for i := range before {
		if got[i] != before[i] {
			t.Fatalf("reopened: line %d is %q, want %q (all: %q)", i, got[i], before[i], got)
		}
	}
	if n := eval[int](again, `document.querySelectorAll('#messages li.restored').length`); n != len(before) {
		t.Errorf("%d lines marked restored, want %d", n, len(before))
	}
	again.say("terceira mensagem")
	if !eval[bool](again, fmt.Sprintf(`JSON.parse(localStorage.getItem('demo.transcript.' + %q)).some(m => m.text === 'terceira mensagem')`, session)) {
		t.Error("the new message is not kept")
	}

	other := newTab(t)
	other.do("opening another session", chromedp.Navigate(s.WebChatURL+"/?session="+sessionID(t)))
	other.waitJS("the socket to be linked", `window.demo && window.demo.state === 'linked'`, 10*time.Second)
	if n := eval[int](other, `window.demo.restored`); n != 0 {
		t.Errorf("a new session shows %d earlier lines", n)
	}
}
