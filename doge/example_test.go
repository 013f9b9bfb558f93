package doge_test

import (
	"context"
	"fmt"
	"log"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/doge"
	"github.com/dmavk/dmavk/gen"
	"github.com/dmavk/dmavk/nn"
	"github.com/dmavk/dmavk/tokenizer"
)

// A model directory from disk, a prompt, eight greedy tokens.
func Example() {
	ctx := context.Background()
	dev, err := dma.Open(dma.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()
	layers, _ := nn.New(dev)
	defer layers.Close()
	model, err := doge.Load(ctx, layers, "../testdata/doge/tiny", doge.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer model.Close()
	tok, _ := tokenizer.Load("../testdata/doge/tiny/tokenizer.json")
	state, _ := model.NewState(1, 1024) // one sequence of up to 1024 tokens
	defer state.Close()
	res, err := gen.Generate(ctx, state, [][]int{tok.Encode("Hello, Doge", true)}, gen.Options{MaxTokens: 8}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Tokens[0])
	// Output: [544 544 544 544 544 544 544 544]
}
