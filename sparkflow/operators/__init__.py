"""Built-in operators. They talk to the world through the context handed over by the runtime only."""
