// Renders an Ollama Modelfile's TEMPLATE the way Ollama's chat endpoint does, with Go's own text/template:
// the Modelfile's SYSTEM becomes the first message when the request has no system message (server/routes.go),
// consecutive messages of one role are merged and every system message is joined into .System (template.collate),
// and the template runs with missingkey=zero, Ollama's `json` function, and the data map of template.Execute.
//
// Input (stdin): a JSON list of {"modelfile", "messages": [{"role", "content"}], "think", "is_think_set"}.
// Output (stdout): a JSON list of {"text"} or {"error"}, one per input.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"strings"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type Case struct {
	Modelfile  string    `json:"modelfile"`
	Messages   []Message `json:"messages"`
	Think      bool      `json:"think"`
	IsThinkSet bool      `json:"is_think_set"`
}

type Result struct {
	Text  string `json:"text"`
	Error string `json:"error,omitempty"`
}

// quoted returns the text of KEYWORD """...""" (or KEYWORD "..." on one line) in a Modelfile.
func quoted(modelfile, keyword string) (string, bool) {
	triple := regexp.MustCompile(`(?ms)^` + keyword + ` """(.*?)"""`)
	if m := triple.FindStringSubmatch(modelfile); m != nil {
		return m[1], true
	}
	return "", false
}

func collate(msgs []Message) (string, []*Message) {
	var system []string
	var collated []*Message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msgs[i].Role {
			collated[len(collated)-1].Content += "\n\n" + msgs[i].Content
		} else {
			m := msgs[i]
			collated = append(collated, &m)
		}
	}
	return strings.Join(system, "\n\n"), collated
}

func render(c Case) (string, error) {
	text, ok := quoted(c.Modelfile, "TEMPLATE")
	if !ok {
		return "", errors.New("the Modelfile has no TEMPLATE")
	}
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(text)
	if err != nil {
		return "", err
	}
	msgs := c.Messages
	if system, ok := quoted(c.Modelfile, "SYSTEM"); ok && system != "" && (len(msgs) == 0 || msgs[0].Role != "system") {
		msgs = append([]Message{{Role: "system", Content: system}}, msgs...)
	}
	system, collated := collate(msgs)
	var out bytes.Buffer
	err = tmpl.Execute(&out, map[string]any{
		"System": system, "Messages": collated, "Tools": nil, "Response": "",
		"Think": c.Think, "IsThinkSet": c.IsThinkSet,
	})
	return out.String(), err
}

func main() {
	var cases []Case
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	results := make([]Result, len(cases))
	for i, c := range cases {
		if text, err := render(c); err != nil {
			results[i].Error = err.Error()
		} else {
			results[i].Text = text
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		panic(err)
	}
}
