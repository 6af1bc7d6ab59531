pytest_plugins = ["stack.testing"]
