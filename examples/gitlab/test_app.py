"""The example service's unit tests: the pipeline's `test` stage runs them."""

import unittest

from app import greeting


class GreetingTest(unittest.TestCase):
    def test_names_the_version(self) -> None:
        self.assertEqual(greeting("3f2a1b9c"), "hello from 3f2a1b9c\n")


if __name__ == "__main__":
    unittest.main()
