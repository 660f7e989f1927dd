"""CPU speed and accuracy comparisons run on demand (`liteseg bench`, `liteseg bench-detection`);
they return rows and tables, the command line prints them."""
