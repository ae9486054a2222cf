"""retnet-bench command line (placeholder: filled in by the runner work)."""
import typer

app = typer.Typer(help="RetNet vs KV-cache Transformer decode/train benchmarks.")


@app.command("version")
def version() -> None:
    print("0.1.0")


if __name__ == "__main__":
    app()
