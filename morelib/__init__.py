"""morelib: a readable reproduction package for MORE-R1.

One module per concept; the numbered notebooks in ``notebooks/`` call into them.
"""

__version__ = "0.1.0"
