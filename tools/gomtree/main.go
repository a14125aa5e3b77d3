// gomtree -c for the tests: go-mtree's manifest writer (Debian's
// golang-github-vbatts-go-mtree-dev ships the library but not the command).
// Flags as gomtree's: -c -p PATH [-k KEYWORDS] [-K KEYWORDS].
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/vbatts/go-mtree"
)

func split(arg string) []mtree.Keyword {
	var out []mtree.Keyword
	for _, kw := range strings.FieldsFunc(arg, func(r rune) bool { return r == ',' || r == ' ' }) {
		out = append(out, mtree.KeywordSynonym(kw))
	}
	return out
}

func main() {
	create := flag.Bool("c", false, "print a manifest of -p")
	root := flag.String("p", ".", "root of the tree")
	use := flag.String("k", "", "use only these keywords (type is always added)")
	add := flag.String("K", "", "add these keywords")
	flag.Parse()
	if !*create {
		fmt.Fprintln(os.Stderr, "gomtree: only -c (create) is built here")
		os.Exit(2)
	}
	keywords := append([]mtree.Keyword{}, mtree.DefaultKeywords...)
	if *use != "" {
		keywords = split(*use)
		if !mtree.InKeywordSlice("type", keywords) {
			keywords = append([]mtree.Keyword{"type"}, keywords...)
		}
	}
	keywords = append(keywords, split(*add)...)
	dh, err := mtree.Walk(*root, nil, keywords, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gomtree:", err)
		os.Exit(1)
	}
	if _, err := dh.WriteTo(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gomtree:", err)
		os.Exit(1)
	}
}
