/* main.c — placeholder until the CLI dispatch lands. */
int main(void) { return 0; }
